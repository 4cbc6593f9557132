"""The daily job, its schedule and the landing sensor: what they launch, and when."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline.automation import SETTLE_SECONDS, daily_schedule, new_landing_day
from crm_pipeline.definitions import defs
from crm_pipeline.raw.assets import raw_assets
from crm_pipeline.resources import LandingZoneResource, WarehouseResource

SOURCES = {"store_purchases": "pos.csv", "inquiries": "helpdesk.jsonl", "feedback": "survey.csv"}


def _deliver(root: Path, day: str, *folders: str, age_s: float = 600) -> list[Path]:
    """A day's files (every daily source's, unless named), written `age_s` seconds ago."""
    written = []
    for folder in folders or SOURCES:
        path = root / folder / day / SOURCES[folder]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("header\n", encoding="utf-8")
        _age(path, age_s)
        written.append(path)
    return written


def _age(path: Path, seconds: float) -> None:
    """Give a file and its folder a time `seconds` ago."""
    stamp = time.time_ns() - int(seconds * 1e9)
    for each in (path, path.parent):
        os.utime(each, ns=(stamp, stamp))


def _evaluate(
    root: Path, cursor: str | None = None, instance: dg.DagsterInstance | None = None
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor,
        instance=instance or dg.DagsterInstance.ephemeral(),
        resources={
            "landing_zone": LandingZoneResource(root=str(root)),
            "warehouse": WarehouseResource(path=str(root / "warehouse.duckdb")),
        },
    )
    return new_landing_day(context)


def _launched(result: dg.SensorResult) -> list[str]:
    """Each request as its first..last day."""
    launched = []
    for request in result.run_requests:
        tags = request.tags
        first = request.partition_key or tags["dagster/asset_partition_range_start"]
        launched.append(f"{first}..{tags.get('dagster/asset_partition_range_end', first)}")
    return launched


def test_the_sensor_launches_a_delivered_day_once_and_again_when_it_is_redelivered(
    tmp_path: Path,
) -> None:
    first = _deliver(tmp_path, "2025-03-01")[0]
    _deliver(tmp_path, "2025-03-03", "store_purchases")  # the others' folders are still due
    _deliver(tmp_path, "1999-01-01", "store_purchases")  # before the first partition: ignored
    result = _evaluate(tmp_path)
    assert _launched(result) == ["2025-03-01..2025-03-01"]
    again = _evaluate(tmp_path, result.cursor)
    assert again.run_requests == []
    assert "waiting for folders, e.g. 2025-03-03: inquiries/2025-03-03/, feedback/2025-03-03/" in (
        again.skip_reason.skip_message
    )
    _deliver(tmp_path, "2025-03-03", "inquiries", "feedback")
    assert _launched(_evaluate(tmp_path, again.cursor)) == ["2025-03-03..2025-03-03"]
    _age(first, 300)  # the day's file is delivered again
    redelivered = _evaluate(tmp_path, again.cursor)
    assert _launched(redelivered) == ["2025-03-01..2025-03-01", "2025-03-03..2025-03-03"]
    assert json.loads(redelivered.cursor)["2025-03-01"] == first.stat().st_mtime_ns
    # A file still being copied: the day waits until its newest file is a while old.
    _deliver(tmp_path, "2025-03-05", age_s=5)
    settling = _evaluate(tmp_path, redelivered.cursor)
    assert settling.run_requests == []
    assert f"1 day(s) with files newer than {SETTLE_SECONDS} s" in settling.skip_reason.skip_message


def test_the_sensor_runs_consecutive_days_as_one_run_and_skips_days_loaded_or_in_flight(
    tmp_path: Path,
) -> None:
    for day in ("2025-03-01", "2025-03-02", "2025-03-03", "2025-03-05"):
        _deliver(tmp_path, day)
    assert _launched(_evaluate(tmp_path)) == ["2025-03-01..2025-03-03", "2025-03-05..2025-03-05"]
    # Days a published run loaded after their files last changed are not launched again, as
    # when the sensor is switched on over a landing zone already loaded.
    published = tmp_path / "published.duckdb"
    with duckdb.connect(str(published)) as conn:
        conn.execute(
            "CREATE SCHEMA raw; CREATE TABLE raw.deliveries (source VARCHAR, partition_date DATE, "
            "source_file VARCHAR, source_rows BIGINT, loaded_at TIMESTAMP)"
        )
        now = datetime.now(UTC).replace(tzinfo=None)
        # 2025-03-05's files were delivered again after its load, 20 minutes ago.
        loads = {"2025-03-01": now, "2025-03-02": now, "2025-03-05": now - timedelta(minutes=20)}
        for day, at in loads.items():
            for source in ("store_purchases", "feedback"):  # inquiries' file: no rows
                conn.execute(
                    "INSERT INTO raw.deliveries VALUES (?, ?, 'f', 1, ?)", [source, day, at]
                )
    assert _launched(_evaluate(tmp_path)) == ["2025-03-03..2025-03-03", "2025-03-05..2025-03-05"]
    with duckdb.connect(str(published)) as conn:
        conn.execute("UPDATE raw.deliveries SET loaded_at = ?", [now])
    assert _launched(_evaluate(tmp_path)) == ["2025-03-03..2025-03-03"]
    # A day a run not yet ended covers waits for it, and is not marked seen meanwhile.
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("daily_refresh")
    instance.create_run_for_job(
        job,
        tags={"dagster/partition": "2025-03-03"},
        status=dg.DagsterRunStatus.STARTED,
    )
    waiting = _evaluate(tmp_path, instance=instance)
    assert _launched(waiting) == []
    assert set(json.loads(waiting.cursor)) == {"2025-03-01", "2025-03-02", "2025-03-05"}


def test_the_daily_job_covers_every_asset_and_the_schedule_runs_yesterday_once_delivered(
    tmp_path: Path,
) -> None:
    job = defs.resolve_job_def("daily_refresh")
    assert set(job.asset_layer.executable_asset_keys) == set(
        defs.resolve_asset_graph().get_all_asset_keys()
    )
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * *", "UTC")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2025, 3, 2, 6, 0),
        resources={"landing_zone": LandingZoneResource(root=str(tmp_path))},
    )
    _deliver(tmp_path, "2025-03-01", "store_purchases", "feedback")
    skipped = daily_schedule(context)
    assert isinstance(skipped, dg.SkipReason)
    assert "2025-03-01 is not delivered yet: no inquiries/2025-03-01/" in skipped.skip_message
    _deliver(tmp_path, "2025-03-01", "inquiries")
    assert daily_schedule(context).partition_key == "2025-03-01"


def test_the_shop_tables_retry_with_backoff_when_the_database_is_unreachable() -> None:
    shop = [a for a in raw_assets if a.key.path[1].startswith("online_")]
    assert len(shop) == 3
    for asset in shop:
        policy = asset.op.retry_policy
        assert (policy.max_retries, policy.backoff) == (3, dg.Backoff.EXPONENTIAL), asset.key


def test_every_customer_level_table_is_stale_after_a_missed_day() -> None:
    graph = defs.resolve_asset_graph()
    marts = [k for k in graph.get_all_asset_keys() if k.path[0] in ("analytics", "mining")]
    assert len(marts) >= 10
    for key in marts:
        if key == dg.AssetKey(["mining", "report"]):
            continue
        policy = graph.get(key).freshness_policy
        assert policy.fail_window.to_timedelta() == timedelta(hours=30), key
