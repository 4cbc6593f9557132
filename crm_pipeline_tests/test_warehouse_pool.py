"""Warehouse writers share a Dagster pool of one slot, so parallel steps never collide on DuckDB's lock."""

from __future__ import annotations

import itertools
from pathlib import Path

import dagster as dg
import pytest

from crm_pipeline.raw.assets import raw_assets
from crm_pipeline.resources import resources_from_env
from crm_pipeline.run import prepare_instance

WRITERS = ["raw/products", "raw/stores", "raw/loyalty_members"]


def two_writers_job() -> dg.JobDefinition:
    """Three independent warehouse writers the multiprocess executor would run side by side."""
    defs = dg.Definitions(
        assets=raw_assets,
        jobs=[dg.define_asset_job("writers", selection=WRITERS)],
        resources=resources_from_env(),
    )
    return defs.resolve_job_def("writers")


def _step_windows(instance: dg.DagsterInstance, run_id: str) -> list[tuple[float, float]]:
    starts, ends = {}, {}
    for record in instance.get_records_for_run(run_id).records:
        event = record.event_log_entry
        if event.dagster_event is None:
            continue
        if event.dagster_event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = event.timestamp
        if event.dagster_event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            ends[event.step_key] = event.timestamp
    return sorted((starts[k], ends[k]) for k in starts)


def test_parallel_writers_take_turns_and_all_succeed(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_WAREHOUSE", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("CRM_LANDING_DIR", str(tiny_zone))
    instance = prepare_instance(tmp_path / "dagster_home")
    result = dg.execute_job(dg.reconstructable(two_writers_job), instance=instance)
    assert result.success
    windows = _step_windows(instance, result.run_id)
    assert len(windows) == 3
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start >= end, "two warehouse writers ran at the same time"
