"""The daily job, its schedule and the landing sensor: what they launch, and when."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from crm_pipeline.automation import daily_schedule, new_landing_day
from crm_pipeline.definitions import defs
from crm_pipeline.raw.assets import raw_assets
from crm_pipeline.resources import LandingZoneResource


def _deliver(root: Path, folder: str, day: str, name: str = "export.csv") -> Path:
    path = root / folder / day / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("header\n", encoding="utf-8")
    return path


def _evaluate(root: Path, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        cursor=cursor, resources={"landing_zone": LandingZoneResource(root=str(root))}
    )
    return new_landing_day(context)


def test_the_sensor_launches_a_day_once_and_again_when_it_is_redelivered(tmp_path: Path) -> None:
    first = _deliver(tmp_path, "store_purchases", "2025-03-01")
    _deliver(tmp_path, "feedback", "2025-03-01")
    _deliver(tmp_path, "inquiries", "2025-03-02", "export.jsonl")
    _deliver(tmp_path, "store_purchases", "1999-01-01")  # before the first partition: ignored
    result = _evaluate(tmp_path)
    assert [r.partition_key for r in result.run_requests] == ["2025-03-01", "2025-03-02"]
    again = _evaluate(tmp_path, result.cursor)
    assert again.run_requests == [] and again.skip_reason
    stamp = first.stat().st_mtime_ns + 10**9
    os.utime(first, ns=(stamp, stamp))  # the day's file is delivered again
    redelivered = _evaluate(tmp_path, again.cursor)
    assert [r.partition_key for r in redelivered.run_requests] == ["2025-03-01"]
    assert json.loads(redelivered.cursor)["2025-03-01"] == stamp


def test_the_daily_job_covers_every_asset_and_the_schedule_runs_yesterday() -> None:
    job = defs.resolve_job_def("daily_refresh")
    assert set(job.asset_layer.executable_asset_keys) == set(
        defs.resolve_asset_graph().get_all_asset_keys()
    )
    schedule = defs.resolve_schedule_def("daily_refresh_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2025, 3, 2, 6, 0))
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
