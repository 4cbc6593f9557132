"""Running it day after day: the daily job, its schedule, and a sensor for new landing days.

Jobs rather than declarative automation: a day is one run over every layer, ending with the
published copy, so analysts get a whole day at once and an operator sees one run per day to
watch, retry or backfill. Both start stopped; switch them on in the UI (Automation).
"""

import json
from datetime import timedelta

import dagster as dg

from crm_pipeline import landing
from crm_pipeline.partitions import daily_partitions
from crm_pipeline.resources import LandingZoneResource

daily_refresh = dg.define_asset_job(
    "daily_refresh",
    selection=dg.AssetSelection.all(),
    description="One delivery day of every event source, then every customer-level table, the "
    "report and the published copy.",
)


@dg.schedule(
    job=daily_refresh,
    cron_schedule="0 6 * * *",
    name="daily_refresh_schedule",
    description="At 06:00, yesterday's partition (the day that has just been delivered).",
)
def daily_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)


def landing_days(zone: LandingZoneResource) -> dict[str, int]:
    """Every delivery day folder with files, and the newest file time in it (ns)."""
    days: dict[str, int] = {}
    for source in landing.DAILY_FILE_SOURCES:
        folder = zone.path / source.folder
        if not folder.is_dir():
            continue
        for day in folder.iterdir():
            stamps = (
                [f.stat().st_mtime_ns for f in day.iterdir() if f.is_file()] if day.is_dir() else []
            )
            if stamps:
                days[day.name] = max(days.get(day.name, 0), *stamps)
    return days


@dg.sensor(
    job=daily_refresh,
    minimum_interval_seconds=60,
    description="Launches the day's run when files for a day arrive in the landing zone, or "
    "change (a re-delivery): the run replaces that day, it never adds to it.",
)
def new_landing_day(
    context: dg.SensorEvaluationContext, landing_zone: LandingZoneResource
) -> dg.SensorResult:
    seen = json.loads(context.cursor or "{}")
    found = landing_days(landing_zone)
    valid = set(daily_partitions.get_partition_keys())
    changed = sorted(day for day, stamp in found.items() if day in valid and seen.get(day) != stamp)
    ignored = sorted(day for day in found if day not in valid)
    if ignored:
        context.log.warning(
            f"Landing folders outside the partitions ({ignored[0]}..{ignored[-1]}): not days "
            f"from CRM_FIRST_DAY to yesterday; rename them or move CRM_FIRST_DAY."
        )
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"{day}@{found[day]}", partition_key=day) for day in changed
        ],
        cursor=json.dumps(found),
        skip_reason=None if changed else "No new or changed delivery day in the landing zone",
    )
