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
from crm_pipeline.run import IN_FLIGHT, RANGE_END, RANGE_START, range_tags

# A day launches once its newest file is this old: a copy still being written is not read.
SETTLE_SECONDS = 120

daily_refresh = dg.define_asset_job(
    "daily_refresh",
    selection=dg.AssetSelection.all(),
    description="One delivery day of every event source, then every customer-level table, the "
    "report and the published copy.",
)


def _stamp(path: Path) -> int | None:
    """A file's or folder's modification time (ns); None when it has just gone (a transfer
    tool's temporary file, renamed between the listing and this)."""
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


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
                stamps = [_stamp(day), *(_stamp(f) for f in day.iterdir() if f.is_file())]
                known = [stamp for stamp in stamps if stamp is not None]
                if known:
                    days.setdefault(day.name, {})[source.name] = max(known)
    return days


def missing_folders(day: str, stamps: dict[str, int]) -> list[str]:
    """The daily sources' folders a day lacks ('inquiries/2025-03-01/'): until it has them
    all, the day is not delivered."""
    return [f"{s.folder}/{day}/" for s in landing.DAILY_FILE_SOURCES if s.name not in stamps]


class Unreadable(Exception):
    """The published copy could not be read, so what is loaded is not known."""


def loaded_times(published: Path) -> dict[tuple[str, str], int]:
    """When each daily file source's day was last loaded (ns), by a run that was published:
    from raw.deliveries in the published copy (nothing before the first publish)."""
    if not published.exists():
        return {}
    sources = [s.name for s in landing.DAILY_FILE_SOURCES]
    try:
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
    except duckdb.Error as error:
        # Held open for writing (a DuckDB CLI started without -readonly), or not a published
        # copy: better to wait than to launch every day again.
        raise Unreadable(f"cannot read the published copy {published}: {error}") from error
    # loaded_at is UTC without a zone.
    return {(s, d): int(at.replace(tzinfo=UTC).timestamp() * 1e9) for s, d, at in rows}


def _loaded_since(stamps: dict[str, int], day: str, loaded: dict[tuple[str, str], int]) -> bool:
    """Whether a published run loaded the day after every folder of it last changed (a
    source whose folder has no file has no delivery of its own: the day's loading counts)."""
    whole_day = max((at for (_, d), at in loaded.items() if d == day), default=-1)
    return all(loaded.get((source, day), whole_day) >= stamp for source, stamp in stamps.items())


def _covered(run: dg.DagsterRun) -> set[str]:
    """The days a run of the daily job covers (its partition, or its range)."""
    first = run.tags.get(RANGE_START, run.tags.get("dagster/partition"))
    last = run.tags.get(RANGE_END, first)
    if not first:
        return set()
    return {d for d in daily_partitions.get_partition_keys() if first <= d <= last}


def _in_flight(instance: dg.DagsterInstance) -> set[str]:
    """The days that runs of the daily job not yet ended cover."""
    days: set[str] = set()
    for run in instance.get_runs(dg.RunsFilter(job_name=daily_refresh.name, statuses=IN_FLIGHT)):
        days |= _covered(run)
    return days


def _last_run_failed(instance: dg.DagsterInstance, days: set[str]) -> list[str]:
    """Of these days, those whose latest run of the daily job (of the last 100) failed."""
    latest: dict[str, bool] = {}
    for run in instance.get_runs(dg.RunsFilter(job_name=daily_refresh.name), limit=100):
        for day in _covered(run) & days:  # newest run first: the first one seen decides
            latest.setdefault(day, run.status == dg.DagsterRunStatus.FAILURE)
    return sorted(day for day, failed in latest.items() if failed)


def _why_not_yet(day: str, stamps: dict[str, int]) -> str | None:
    """Why a delivered day cannot run yet (a folder missing, a file still new), or None."""
    missing = missing_folders(day, stamps)
    if missing:
        return f"waiting for {', '.join(missing)}"
    if max(stamps.values()) > time.time_ns() - SETTLE_SECONDS * 10**9:
        return f"files newer than {SETTLE_SECONDS} s"
    return None


@dg.schedule(
    job=daily_refresh,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    name="daily_refresh_schedule",
    description="At 06:00 UTC, yesterday's partition, once every daily source has delivered "
    f"its folder for the day and its files are {SETTLE_SECONDS} s old, unless a published run "
    "has loaded it since they changed or a run of it has not ended (as the sensor launches "
    "days); a skipped tick says why.",
)
def daily_schedule(
    context: dg.ScheduleEvaluationContext,
    landing_zone: LandingZoneResource,
    warehouse: WarehouseResource,
) -> dg.RunRequest | dg.SkipReason:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    stamps = landing_days(landing_zone).get(day, {})
    why = _why_not_yet(day, stamps)
    if why:
        return dg.SkipReason(
            f"{day} cannot run yet ({why} in {landing_zone.path}): the sensor new_landing_day "
            "launches it once it can, or launch it by hand."
        )
    if day in _in_flight(context.instance):
        return dg.SkipReason(f"{day}: a run of it has not ended")
    try:
        loaded = loaded_times(warehouse.published_path())
    except Unreadable as error:
        return dg.SkipReason(f"{day}: {error}")
    if _loaded_since(stamps, day, loaded):
        return dg.SkipReason(f"{day}: loaded and published since its files last changed")
    return dg.RunRequest(run_key=day, partition_key=day)


def _failed_note(
    instance: dg.DagsterInstance,
    found: dict[str, dict[str, int]],
    warehouse: WarehouseResource,
) -> str:
    """The delivered days whose last run failed and that no published run loaded since their
    files changed: the sensor launches a day once, so these wait for a launch by hand."""
    failed = _last_run_failed(instance, set(found))
    if not failed:
        return ""
    try:
        loaded = loaded_times(warehouse.published_path())
    except Unreadable:
        loaded = {}
    failed = [day for day in failed if not _loaded_since(found[day], day, loaded)]
    if not failed:
        return ""
    return (
        f"; {len(failed)} day(s) whose last run failed, e.g. {failed[0]}: once the cause is "
        "fixed, launch them in the UI (a backfill of daily_refresh); the sensor launches a "
        "day again only when its files change"
    )


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
    "the run replaces the day, it never adds to it). A day it has not launched is not "
    "launched when a published run loaded it after its files last changed (by the schedule, "
    "by hand, before the sensor was switched on), nor is a day a run not yet ended covers; "
    "consecutive days go in one run.",
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
    held = {day: why for day in changed if (why := _why_not_yet(day, found[day]))}
    ready = [day for day in changed if day not in held]
    # A day the sensor has not seen may have been loaded without it (by the schedule, by
    # hand, before it was switched on); a day it has seen changed since it launched it.
    unseen = [day for day in ready if day not in seen]
    try:
        loaded = loaded_times(warehouse.published_path()) if unseen else {}
    except Unreadable as error:
        return dg.SensorResult(cursor=context.cursor, skip_reason=f"Waiting: {error}")
    busy = _in_flight(context.instance) if ready else set()
    cursor = dict(seen)
    launch = []
    for day in ready:
        if day in busy:
            held[day] = "a run of it has not ended"
            continue
        cursor[day] = max(found[day].values())
        if day in seen or not _loaded_since(found[day], day, loaded):
            launch.append(day)
    requests = [
        dg.RunRequest(
            run_key=f"{first}..{last}@{max(cursor[d] for d in launch if first <= d <= last)}",
            partition_key=first if first == last else None,
            tags={} if first == last else range_tags(first, last),
        )
        for first, last in _blocks(launch)
    ]
    skip = "No new or changed delivery day to launch"
    if held:
        day, why = next(iter(held.items()))
        skip += f"; {len(held)} day(s) not yet, e.g. {day}: {why}"
    if not requests:
        skip += _failed_note(context.instance, found, warehouse)
    return dg.SensorResult(
        run_requests=requests, cursor=json.dumps(cursor), skip_reason=None if requests else skip
    )
