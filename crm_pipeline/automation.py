"""Running it day after day: the daily job, its schedule, and a sensor for new landing days.

Jobs rather than declarative automation: a day is one run over every layer, ending with the
published copy, so analysts get a whole day at once and an operator sees one run per day to
watch, retry or backfill. Both start stopped; switch them on in the UI (Automation).
"""

import json
import time
from datetime import UTC, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline import landing
from crm_pipeline.partitions import daily_partitions
from crm_pipeline.resources import LandingZoneResource, WarehouseResource
from crm_pipeline.run import range_tags

# A day launches once its newest file is this old: a copy still being written is not read.
SETTLE_SECONDS = 120
# Runs of the daily job that have not ended: a day one of them covers is not launched again.
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

daily_refresh = dg.define_asset_job(
    "daily_refresh",
    selection=dg.AssetSelection.all(),
    description="One delivery day of every event source, then every customer-level table, the "
    "report and the published copy.",
)


def landing_days(zone: LandingZoneResource) -> dict[str, dict[str, int]]:
    """Every delivery day folder: per daily file source that has the day's folder, the newest
    time (ns) of the folder and its files (a file added, changed or taken away moves it)."""
    days: dict[str, dict[str, int]] = {}
    for source in landing.DAILY_FILE_SOURCES:
        folder = zone.path / source.folder
        if not folder.is_dir():
            continue
        for day in folder.iterdir():
            if day.is_dir():
                stamps = [day.stat().st_mtime_ns]
                stamps += [f.stat().st_mtime_ns for f in day.iterdir() if f.is_file()]
                days.setdefault(day.name, {})[source.name] = max(stamps)
    return days


def missing_folders(day: str, stamps: dict[str, int]) -> list[str]:
    """The daily sources' folders a day lacks ('inquiries/2025-03-01/'): until it has them
    all, the day is not delivered."""
    return [f"{s.folder}/{day}/" for s in landing.DAILY_FILE_SOURCES if s.name not in stamps]


@dg.schedule(
    job=daily_refresh,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    name="daily_refresh_schedule",
    description="At 06:00 UTC, yesterday's partition, once every daily source has delivered "
    "its folder for the day (otherwise the tick is skipped, saying which are missing, and the "
    "sensor launches the day when they arrive).",
)
def daily_schedule(
    context: dg.ScheduleEvaluationContext, landing_zone: LandingZoneResource
) -> dg.RunRequest | dg.SkipReason:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    missing = missing_folders(day, landing_days(landing_zone).get(day, {}))
    if missing:
        return dg.SkipReason(
            f"{day} is not delivered yet: no {', '.join(missing)} in {landing_zone.path}. "
            "The sensor new_landing_day launches the day once they arrive (or launch it by hand)."
        )
    return dg.RunRequest(run_key=day, partition_key=day)


def loaded_times(published: Path) -> dict[tuple[str, str], int]:
    """When each daily file source's day was last loaded (ns), by a run that was published:
    from raw.deliveries in the published copy (nothing before the first publish)."""
    if not published.exists():
        return {}
    sources = [s.name for s in landing.DAILY_FILE_SOURCES]
    with duckdb.connect(str(published), read_only=True) as conn:
        rows = conn.execute(
            """
            SELECT source, CAST(partition_date AS VARCHAR), max(loaded_at)
            FROM raw.deliveries
            WHERE source IN (SELECT unnest($sources)) AND partition_date IS NOT NULL
            GROUP BY ALL
            """,
            {"sources": sources},
        ).fetchall()
    # loaded_at is UTC without a zone.
    return {(s, d): int(at.replace(tzinfo=UTC).timestamp() * 1e9) for s, d, at in rows}


def _loaded_since(stamps: dict[str, int], day: str, loaded: dict[tuple[str, str], int]) -> bool:
    """Whether a published run loaded the day after every folder of it last changed (a
    source whose folder has no file has no delivery of its own: the day's loading counts)."""
    whole_day = max((at for (_, d), at in loaded.items() if d == day), default=-1)
    return all(loaded.get((source, day), whole_day) >= stamp for source, stamp in stamps.items())


def _in_flight(instance: dg.DagsterInstance) -> set[str]:
    """The days that runs of the daily job not yet ended cover."""
    days: set[str] = set()
    for run in instance.get_runs(dg.RunsFilter(job_name=daily_refresh.name, statuses=IN_FLIGHT)):
        tags = run.tags
        first = tags.get("dagster/asset_partition_range_start", tags.get("dagster/partition"))
        last = tags.get("dagster/asset_partition_range_end", first)
        if first:
            days |= {d for d in daily_partitions.get_partition_keys() if first <= d <= last}
    return days


def _blocks(days: list[str]) -> list[tuple[str, str]]:
    """Sorted days as runs of consecutive partitions (first, last)."""
    keys = daily_partitions.get_partition_keys()
    position = {k: i for i, k in enumerate(keys)}
    blocks: list[tuple[str, str]] = []
    for day in days:
        if blocks and position[day] == position[blocks[-1][1]] + 1:
            blocks[-1] = (blocks[-1][0], day)
        else:
            blocks.append((day, day))
    return blocks


@dg.sensor(
    job=daily_refresh,
    minimum_interval_seconds=60,
    description="Launches a day's run when every daily source has delivered its folder for it "
    f"and its newest file is {SETTLE_SECONDS} s old, or when such a day changes (a re-delivery: "
    "the run replaces the day, it never adds to it). Days already loaded by a published run "
    "after their files last changed, or covered by a run not yet ended, are not launched "
    "again; consecutive new days go in one run.",
)
def new_landing_day(
    context: dg.SensorEvaluationContext,
    landing_zone: LandingZoneResource,
    warehouse: WarehouseResource,
) -> dg.SensorResult:
    seen = json.loads(context.cursor or "{}")
    found = landing_days(landing_zone)
    valid = set(daily_partitions.get_partition_keys())
    ignored = sorted(day for day in found if day not in valid)
    if ignored:
        context.log.warning(
            f"Landing folders outside the partitions ({ignored[0]}..{ignored[-1]}): not days "
            f"from CRM_FIRST_DAY to yesterday; rename them or move CRM_FIRST_DAY."
        )
    changed = sorted(
        day
        for day, stamps in found.items()
        if day in valid and seen.get(day) != max(stamps.values())
    )
    waiting = {day: missing_folders(day, found[day]) for day in changed}
    waiting = {day: missing for day, missing in waiting.items() if missing}
    settled = time.time_ns() - SETTLE_SECONDS * 10**9
    settling = [d for d in changed if d not in waiting and max(found[d].values()) > settled]
    ready = [d for d in changed if d not in waiting and d not in settling]
    loaded = loaded_times(warehouse.published_path()) if ready else {}
    busy = _in_flight(context.instance) if ready else set()
    cursor = dict(seen)
    launch = []
    for day in ready:
        if day in busy:
            continue  # looked at again once that run has ended
        cursor[day] = max(found[day].values())
        if not _loaded_since(found[day], day, loaded):
            launch.append(day)
    requests = [
        dg.RunRequest(
            run_key=f"{first}..{last}@{max(cursor[d] for d in launch if first <= d <= last)}",
            partition_key=first if first == last else None,
            tags={} if first == last else range_tags(first, last),
        )
        for first, last in _blocks(launch)
    ]
    notes = []
    if waiting:
        day, missing = next(iter(waiting.items()))
        notes.append(f"{len(waiting)} day(s) waiting for folders, e.g. {day}: {', '.join(missing)}")
    if settling:
        notes.append(f"{len(settling)} day(s) with files newer than {SETTLE_SECONDS} s")
    if not launch:
        notes.append("no new or changed delivery day to launch")
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps(cursor),
        skip_reason=None if requests else "; ".join(notes).capitalize(),
    )
