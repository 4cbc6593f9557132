"""Writing the crosswalk with stable keys, and scoring it against a generator's ground truth."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import duckdb

from crm_pipeline.core.identity import RECORDS, load_records, resolve
from crm_pipeline.core.keys import assign_keys
from crm_pipeline.raw.tables import table_exists

CROSSWALK = "core.customer_crosswalk"
MERGES = "core.customer_key_merges"
# Sources a generator's identities.csv scores (orders reach a customer through their account).
SCORED_SOURCES = ("online_accounts", "loyalty_members", "store_purchases", "inquiries", "feedback")


def build_crosswalk(conn: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Resolve identities, keep earlier keys, record merges, write the crosswalk."""
    conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {MERGES} (
            retired_key VARCHAR NOT NULL,
            surviving_key VARCHAR NOT NULL,
            merged_at TIMESTAMP NOT NULL
        )
        """
    )
    exists = table_exists(conn, CROSSWALK)
    conn.execute(
        "CREATE OR REPLACE TEMP VIEW previous AS "
        + (
            f"SELECT source, source_id, customer_key, key_since FROM {CROSSWALK}"
            if exists
            else "SELECT NULL::VARCHAR AS source, NULL::VARCHAR AS source_id, "
            "NULL::VARCHAR AS customer_key, NULL::TIMESTAMP AS key_since WHERE FALSE"
        )
    )
    load_records(conn)
    conn.register("links_frame", resolve(conn))
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE resolved AS
        SELECT r.source, r.source_id, r.seen_at, l.component, l.match_rule, l.confidence
        FROM {RECORDS} AS r
        JOIN links_frame AS l USING (rid)
        """
    )
    conn.unregister("links_frame")
    retired = frozenset(k for (k,) in conn.execute(f"SELECT retired_key FROM {MERGES}").fetchall())
    merges = assign_keys(conn, now, retired)
    conn.execute("DROP VIEW previous")
    conn.execute(
        f"""
        CREATE OR REPLACE TABLE {CROSSWALK} AS
        SELECT
            r.source,
            r.source_id,
            CAST(k.customer_key AS VARCHAR) AS customer_key,
            CAST(r.match_rule AS VARCHAR) AS match_rule,
            CAST(r.confidence AS DOUBLE) AS confidence,
            CAST(r.seen_at AS TIMESTAMP) AS seen_at,
            k.key_since
        FROM resolved AS r
        JOIN component_keys AS k USING (component)
        ORDER BY customer_key, seen_at, source, source_id
        """
    )
    if len(merges):
        conn.register("merges_frame", merges)
        conn.execute(f"INSERT INTO {MERGES} SELECT * FROM merges_frame")
        conn.unregister("merges_frame")
    for temp in ("component_keys", "resolved", RECORDS, "phone_owners"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")


def pairwise_scores(conn: duckdb.DuckDBPyConnection, identities_csv: Path) -> dict[str, float]:
    """Pairwise precision and recall of the crosswalk against true identities.

    A pair is two source records; it is true when both are one person, predicted when both
    have one key. Records the crosswalk does not hold (quarantined ones) are left out.
    """
    # One count per (person, key) cell; a person's records and a key's records are sums of
    # cells, so the three pair counts come from one pass over the records.
    row = conn.execute(
        f"""
        WITH truth AS (
            SELECT source, source_id, person_id
            FROM read_csv(?, header = true, all_varchar = true)
        ), cells AS (
            SELECT t.person_id, x.customer_key, count(*) AS n
            FROM truth AS t
            JOIN {CROSSWALK} AS x USING (source, source_id)
            GROUP BY ALL
        ), people AS (
            SELECT sum(n) AS n FROM cells GROUP BY person_id
        ), keys AS (
            SELECT sum(n) AS n FROM cells GROUP BY customer_key
        )
        SELECT
            (SELECT sum(n * (n - 1) / 2) FROM people),
            (SELECT sum(n * (n - 1) / 2) FROM keys),
            (SELECT sum(n * (n - 1) / 2) FROM cells),
            (SELECT count(*) FROM truth),
            (SELECT sum(n) FROM cells)
        """,
        [str(identities_csv)],
    ).fetchall()[0]
    true_pairs, predicted, correct, records, matched = (float(v or 0) for v in row)
    return {
        "precision": correct / predicted if predicted else 1.0,
        "recall": correct / true_pairs if true_pairs else 1.0,
        "true_pairs": true_pairs,
        "predicted_pairs": predicted,
        "records_scored": matched,
        "records_in_truth": records,
    }
