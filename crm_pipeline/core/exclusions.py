"""Exclusions, applied in one place: the customer keys of test and staff accounts, and the
excluded rows of each core table listed in core.excluded_rows with their rule."""

from __future__ import annotations

import duckdb

from crm_pipeline.core.classify import CoreRules
from crm_pipeline.raw.tables import table_exists

CROSSWALK = "core.customer_crosswalk"


def in_list(values: list[str]) -> str:
    """A SQL list of literals for settings (never data): quotes doubled."""
    if not values:
        return "(NULL)"
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def excluded_customers_sql(config: CoreRules) -> str:
    """Customer keys of test and staff accounts (one row per key), with the excluding rule."""
    test = in_list([d.lower() for d in config.test_account_domains])
    staff = in_list([d.lower() for d in config.staff_email_domains])
    return f"""
        SELECT x.customer_key,
               min(CASE WHEN split_part(a.email, '@', 2) IN {test} THEN 'test_account'
                        ELSE 'staff_account' END) AS rule
        FROM staging.online_accounts AS a
        JOIN {CROSSWALK} AS x ON x.source = 'online_accounts' AND x.source_id = a.account_id
        WHERE split_part(a.email, '@', 2) IN {test} OR split_part(a.email, '@', 2) IN {staff}
        GROUP BY x.customer_key
    """


def excluded_customers(conn: duckdb.DuckDBPyConnection, config: CoreRules) -> None:
    rows = excluded_customers_sql(config)
    if table_exists(conn, "raw.erased_records"):
        # An erased test or staff account has no email left to tell: its rule was kept.
        rows = f"""
            SELECT customer_key, min(rule) AS rule
            FROM (
                {rows}
                UNION ALL
                SELECT x.customer_key, e.excluded_as
                FROM raw.erased_records AS e
                JOIN {CROSSWALK} AS x USING (source, source_id)
                WHERE e.excluded_as IS NOT NULL
            )
            GROUP BY customer_key
        """
    conn.execute(f"CREATE OR REPLACE TEMP TABLE excluded_customers AS {rows}")


def record_exclusions(
    conn: duckdb.DuckDBPyConnection, entity: str, rows_sql: str, replacing: str = "TRUE"
) -> None:
    """Replace the excluded rows of one entity (id, rule) in core.excluded_rows: all of them,
    or those whose id meets `replacing`."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS core.excluded_rows "
        "(entity VARCHAR NOT NULL, id VARCHAR NOT NULL, rule VARCHAR NOT NULL)"
    )
    conn.execute(f"DELETE FROM core.excluded_rows WHERE entity = ? AND {replacing}", [entity])
    conn.execute(f"INSERT INTO core.excluded_rows SELECT ?, id, rule FROM ({rows_sql})", [entity])
