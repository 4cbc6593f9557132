"""The business clock each staged partition was written on: staging converts a delivered time
with a UTC offset to the warehouse's time zone (CRM_TIME_ZONE), so days staged under one zone
must not be mixed with days staged under another."""

from __future__ import annotations

from datetime import datetime

import duckdb

from crm_pipeline.failures import ActionableError
from crm_pipeline.raw.tables import ddl

ZONES_TABLE = "staging.time_zones"
ZONES_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "time_zone": "VARCHAR NOT NULL",
    "loaded_at": "TIMESTAMP NOT NULL",
}


def refuse_another_zone(
    conn: duckdb.DuckDBPyConnection, source: str, days: list[str] | None
) -> None:
    """Fail, before anything is cleared, when days of `source` that the run does not stage
    again were staged under another time zone than the connection's: the run would leave the
    table on two clocks, hours apart. (A run over every day stages them all anew.)"""
    if days is None:
        return  # a snapshot is staged whole, on the run's clock
    conn.execute(ddl(ZONES_TABLE, ZONES_COLUMNS))
    found = conn.execute(
        f"""
        SELECT time_zone, current_setting('TimeZone'), count(*),
               min(partition_date), max(partition_date)
        FROM {ZONES_TABLE}
        WHERE source = $source
          AND time_zone <> current_setting('TimeZone')
          AND NOT partition_date BETWEEN $first AND $last
        GROUP BY ALL
        ORDER BY 4
        LIMIT 1
        """,
        {"source": source, "first": days[0], "last": days[-1]},
    ).fetchall()
    if found:
        staged_in, now, count, first, last = found[0]
        raise ActionableError(
            f"staging.{source} holds {count} day(s) ({first}..{last}) staged with "
            f"CRM_TIME_ZONE {staged_in!r}; this run's is {now!r}, so its days would be on "
            f"another clock. Set CRM_TIME_ZONE back to {staged_in!r}, or stage every day "
            f"again in one run (crm-pipeline materialize, with no --first) to move the "
            f"warehouse to {now!r}; staging.{source} is left as it was."
        )


def record_zone(
    conn: duckdb.DuckDBPyConnection, source: str, days: list[str] | None, loaded_at: datetime
) -> None:
    """Record the connection's time zone for each day staged (a NULL day: a snapshot)."""
    conn.execute(ddl(ZONES_TABLE, ZONES_COLUMNS))
    if days is None:
        conn.execute(f"DELETE FROM {ZONES_TABLE} WHERE source = ?", [source])
    else:
        conn.execute(
            f"DELETE FROM {ZONES_TABLE} WHERE source = ? AND partition_date BETWEEN ? AND ?",
            [source, days[0], days[-1]],
        )
    conn.execute(
        f"""
        INSERT INTO {ZONES_TABLE}
        SELECT $source, CAST(day AS DATE), current_setting('TimeZone'), $at
        FROM unnest($days) AS t(day)
        """,
        {"source": source, "days": days or [None], "at": loaded_at},
    )
