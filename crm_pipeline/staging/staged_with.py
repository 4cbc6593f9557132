"""The business settings each staged partition was read with: the time zone a delivered time
with a UTC offset is converted to (CRM_TIME_ZONE) and the countries a phone written without its
country code is read in (CRM_PHONE_REGIONS). Days staged with other settings must not be mixed
with the run's: times would be hours apart, and one number two customers' phones.

Each day also records the version of the code that read and staged it (staging_code): after
an upgrade, the days not run since keep the earlier version's reading and cleaning rules, and
the staging tables' check `staged_by_this_version` names them until they are run again.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

import anyascii
import duckdb
import pandas
import phonenumbers

from crm_pipeline import code_digest
from crm_pipeline.failures import ActionableError
from crm_pipeline.raw.tables import ddl, table_exists


@cache
def staging_code() -> str:
    """The digest of the code that decides what a delivered day becomes in raw and staging
    (every module of the two layers, the landing contract, and the libraries that read and
    clean): a day staged by other code may have been read and cleaned otherwise."""
    return code_digest(
        ("raw", "staging", "landing.py"),
        phonenumbers.__version__,
        anyascii.__version__,
        duckdb.__version__,
        pandas.__version__,
    )


STAGED_WITH_TABLE = "staging.staged_with"
STAGED_WITH_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "time_zone": "VARCHAR NOT NULL",
    "phone_regions": "VARCHAR NOT NULL",
    "loaded_at": "TIMESTAMP NOT NULL",
    # NULL on the rows of versions before it was recorded.
    "code": "VARCHAR",
}
# Each setting: its column, and the environment variable an operator sets it with.
SETTINGS = (("time_zone", "CRM_TIME_ZONE"), ("phone_regions", "CRM_PHONE_REGIONS"))


def refuse_other_settings(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    run: tuple[list[str] | None, list[str]],
    phone_regions: str,
) -> None:
    """Fail, before anything is cleared, when any staged table holds rows this run does not
    stage again that were staged with another time zone (the connection's is the run's) or
    other phone countries: the warehouse would be read two ways, a customer's times hours
    apart across tables, and the identities matched on phones read differently. run: the
    run's days (None: no days) and the staging tables it stages; a table of the run gives up
    its snapshot rows and its rows of the run's days. (A run of every asset over every day
    stages them all anew.)"""
    _ensure(conn)
    days, staged = run
    now = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0], phone_regions
    found = conn.execute(
        f"""
        SELECT source, time_zone, phone_regions, count(*), min(partition_date),
               max(partition_date)
        FROM {STAGED_WITH_TABLE}
        WHERE (time_zone, phone_regions) <> ($zone, $regions)
          AND NOT (
              list_contains($staged, source)
              AND (
                  partition_date IS NULL
                  OR ($first IS NOT NULL AND partition_date BETWEEN $first AND $last)
              )
          )
        GROUP BY source, time_zone, phone_regions
        ORDER BY (source = $source) DESC, 5 NULLS FIRST, 1
        LIMIT 1
        """,
        {
            "source": source,
            "zone": now[0],
            "regions": now[1],
            "staged": staged,
            "first": days[0] if days else None,
            "last": days[-1] if days else None,
        },
    ).fetchall()
    if not found:
        return
    table, *then, count, first, last = found[0]
    changed = [(name, then[i], now[i]) for i, (_, name) in enumerate(SETTINGS) if then[i] != now[i]]
    staged_with = " and ".join(f"{name} {was!r}" for name, was, _ in changed)
    this = " and ".join(f"{name} {is_!r}" for name, _, is_ in changed)
    back = " and ".join(f"{name} back to {was!r}" for name, was, _ in changed)
    held = f"{count} day(s) ({first}..{last})" if first else "its snapshot"
    raise ActionableError(
        f"staging.{table} holds {held} staged with {staged_with}; this run has {this} and "
        "does not stage them again, so the warehouse would be read two ways. Set "
        f"{back}, or stage every source's every day again in one run (crm-pipeline "
        f"materialize, with no --first and no --select) to move the warehouse to the new "
        f"settings; staging.{source} is left as it was."
    )


def recorded_phone_regions(conn: duckdb.DuckDBPyConnection) -> tuple[str, ...] | None:
    """The phone countries the warehouse was staged with (None: no record, an older
    warehouse), for reading a phone as staging read it."""
    if not table_exists(conn, STAGED_WITH_TABLE):
        return None
    found = conn.execute(f"SELECT DISTINCT phone_regions FROM {STAGED_WITH_TABLE}").fetchall()
    if len(found) > 1:
        raise ActionableError(
            f"{STAGED_WITH_TABLE} holds days staged with different CRM_PHONE_REGIONS "
            f"({', '.join(sorted(r for (r,) in found))}): stage every day again in one run "
            "(crm-pipeline materialize, with no --first), then try again."
        )
    return tuple(found[0][0].split(",")) if found else None


def record_settings(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    days: list[str] | None,
    phone_regions: str,
    loaded_at: datetime,
) -> None:
    """Record the run's settings and code for each day staged (a NULL day: a snapshot)."""
    _ensure(conn)
    if days is None:
        conn.execute(f"DELETE FROM {STAGED_WITH_TABLE} WHERE source = ?", [source])
    else:
        conn.execute(
            f"DELETE FROM {STAGED_WITH_TABLE} WHERE source = ? AND partition_date BETWEEN ? AND ?",
            [source, days[0], days[-1]],
        )
    conn.execute(
        f"""
        INSERT INTO {STAGED_WITH_TABLE}
        SELECT $source, CAST(day AS DATE), current_setting('TimeZone'), $regions, $at, $code
        FROM unnest($days) AS t(day)
        """,
        {
            "source": source,
            "days": days or [None],
            "regions": phone_regions,
            "at": loaded_at,
            "code": staging_code(),
        },
    )


def _ensure(conn: duckdb.DuckDBPyConnection) -> None:
    """The table, with the code column a warehouse of an earlier version lacks."""
    conn.execute(ddl(STAGED_WITH_TABLE, STAGED_WITH_COLUMNS))
    conn.execute(f"ALTER TABLE {STAGED_WITH_TABLE} ADD COLUMN IF NOT EXISTS code VARCHAR")


def staged_by_other_code(conn: duckdb.DuckDBPyConnection, source: str) -> list[str]:
    """The days of staging.<source> that other code staged: recorded with another version, or
    not recorded at all (staged before the record was kept), in day order."""
    _ensure(conn)
    return [
        str(day)
        for (day,) in conn.execute(
            f"""
            WITH days AS (
                SELECT DISTINCT partition_date AS day FROM staging.{source}
                UNION
                SELECT partition_date FROM {STAGED_WITH_TABLE} WHERE source = $source
            )
            SELECT day
            FROM days
            LEFT JOIN {STAGED_WITH_TABLE} AS w
              ON w.source = $source AND w.partition_date = days.day
            WHERE day IS NOT NULL AND w.code IS DISTINCT FROM $code
            ORDER BY day
            """,
            {"source": source, "code": staging_code()},
        ).fetchall()
    ]
