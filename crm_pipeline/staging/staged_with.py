"""The business settings each staged partition was read with: the time zone a delivered time
with a UTC offset is converted to (CRM_TIME_ZONE) and the countries a phone written without its
country code is read in (CRM_PHONE_REGIONS). Days staged with other settings must not be mixed
with the run's: times would be hours apart, and one number two customers' phones."""

from __future__ import annotations

from datetime import datetime

import duckdb

from crm_pipeline.failures import ActionableError
from crm_pipeline.raw.tables import ddl

STAGED_WITH_TABLE = "staging.staged_with"
STAGED_WITH_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "time_zone": "VARCHAR NOT NULL",
    "phone_regions": "VARCHAR NOT NULL",
    "loaded_at": "TIMESTAMP NOT NULL",
}
# Each setting: its column, and the environment variable an operator sets it with.
SETTINGS = (("time_zone", "CRM_TIME_ZONE"), ("phone_regions", "CRM_PHONE_REGIONS"))


def refuse_other_settings(
    conn: duckdb.DuckDBPyConnection, source: str, days: list[str] | None, phone_regions: str
) -> None:
    """Fail, before anything is cleared, when days of `source` that the run does not stage
    again were staged with another time zone (the connection's is the run's) or other phone
    regions: the run would leave the table read two ways. (A run over every day stages them
    all anew.)"""
    if days is None:
        return  # a snapshot is staged whole, with the run's settings
    conn.execute(ddl(STAGED_WITH_TABLE, STAGED_WITH_COLUMNS))
    now = conn.execute("SELECT current_setting('TimeZone')").fetchone()[0], phone_regions
    found = conn.execute(
        f"""
        SELECT time_zone, phone_regions, count(*), min(partition_date), max(partition_date)
        FROM {STAGED_WITH_TABLE}
        WHERE source = $source
          AND (time_zone, phone_regions) <> ($zone, $regions)
          AND NOT partition_date BETWEEN $first AND $last
        GROUP BY ALL
        ORDER BY 4
        LIMIT 1
        """,
        {"source": source, "zone": now[0], "regions": now[1], "first": days[0], "last": days[-1]},
    ).fetchall()
    if not found:
        return
    *then, count, first, last = found[0]
    changed = [(name, then[i], now[i]) for i, (_, name) in enumerate(SETTINGS) if then[i] != now[i]]
    staged = " and ".join(f"{name} {was!r}" for name, was, _ in changed)
    this = " and ".join(f"{name} {is_!r}" for name, _, is_ in changed)
    back = " and ".join(f"{name} back to {was!r}" for name, was, _ in changed)
    raise ActionableError(
        f"staging.{source} holds {count} day(s) ({first}..{last}) staged with {staged}; this "
        f"run has {this}, so its days would be read another way. Set {back}, or stage every "
        "day again in one run (crm-pipeline materialize, with no --first) to move the "
        f"warehouse to the new settings; staging.{source} is left as it was."
    )


def record_settings(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    days: list[str] | None,
    phone_regions: str,
    loaded_at: datetime,
) -> None:
    """Record the run's settings for each day staged (a NULL day: a snapshot)."""
    conn.execute(ddl(STAGED_WITH_TABLE, STAGED_WITH_COLUMNS))
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
        SELECT $source, CAST(day AS DATE), current_setting('TimeZone'), $regions, $at
        FROM unnest($days) AS t(day)
        """,
        {"source": source, "days": days or [None], "regions": phone_regions, "at": loaded_at},
    )
