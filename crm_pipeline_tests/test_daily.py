"""Day after day: re-running a day changes no table; a file delivered twice changes no core table
or mart."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.automation import daily_refresh
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.definitions import defs
from crm_pipeline.generate import generate
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline.resources import LandingZoneResource, WarehouseResource
from crm_pipeline.run import landing_days, materialize_all

# When a row was loaded, and the log of model fits (one set of rows per run), are the only
# things a run may change on its own.
LOAD_TIME = "loaded_at"
RUN_LOG = "analytics.model_runs"


def _tables(warehouse: Path) -> dict[str, list[tuple]]:
    """Every table's rows, sorted, without load times; the run log without its run times."""
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        tables = {}
        for schema, table in conn.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
        ).fetchall():
            name = f"{schema}.{table}"
            dropped = [LOAD_TIME, "run_at", "seconds"] if name == RUN_LOG else [LOAD_TIME]
            columns = [c for (c, *_) in conn.execute(f"DESCRIBE {name}").fetchall()]
            kept = ", ".join(f'"{c}"' for c in columns if c not in dropped)
            tables[name] = sorted(
                conn.execute(f"SELECT DISTINCT {kept} FROM {name}").fetchall()
                if name == RUN_LOG  # every run adds the same fits again
                else conn.execute(f"SELECT {kept} FROM {name}").fetchall(),
                key=repr,
            )
    return tables


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """A landing zone of three weeks, materialized in one run over all its days."""
    root = tmp_path_factory.mktemp("daily") / "landing"
    generate(root, customers=150, days=21, seed=11, defect_rate=0.05)
    warehouse = root.parent / "warehouse.duckdb"
    zone = LandingZoneResource(root=str(root))
    days = landing_days(zone)
    test_defs = dg.Definitions(
        assets=list(defs.assets),
        jobs=[daily_refresh],
        resources={
            "warehouse": WarehouseResource(path=str(warehouse)),
            "landing_zone": zone,
            "core_rules": CoreRules(),
            # A fixed day, as a scheduled deployment would not have: re-runs compare alike.
            "analysis": AnalysisSettings(as_of=days[-1]),
            "mining": MiningSettings(),
        },
    )
    assert materialize_all(test_defs, dg.DagsterInstance.ephemeral(), days[0], days[-1]).success
    return test_defs, root, warehouse, days, _tables(warehouse)


def _daily_run(test_defs: dg.Definitions, day: str) -> None:
    result = test_defs.resolve_job_def("daily_refresh").execute_in_process(
        partition_key=day, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    assert result.success


def test_rerunning_a_day_gives_identical_tables(loaded) -> None:
    test_defs, _, warehouse, days, before = loaded
    _daily_run(test_defs, days[len(days) // 2])
    after = _tables(warehouse)
    assert [name for name in before if after[name] != before[name]] == []
    assert after.keys() == before.keys()


def test_a_file_delivered_twice_is_counted_once(loaded) -> None:
    test_defs, root, warehouse, days, _ = loaded
    day = days[len(days) // 2]
    before = _tables(warehouse)
    (delivered,) = sorted((root / "store_purchases" / day).glob("*.csv"))
    again = delivered.with_name(f"again_{delivered.name}")
    shutil.copy(delivered, again)
    try:
        _daily_run(test_defs, day)
    finally:
        again.unlink()
    after = _tables(warehouse)
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        lines = conn.execute(
            "SELECT count(*) FROM raw.store_purchases WHERE source_file LIKE ?",
            [f"%/{day}/again_%"],
        ).fetchall()[0][0]
        merged, quarantined = (
            conn.execute(
                f"SELECT count(*) FROM quarantine.{table} "
                "WHERE source = 'store_purchases' AND source_file LIKE ?",
                [f"%/{day}/again_%"],
            ).fetchall()[0][0]
            for table in ("merged_duplicates", "staging_rejects")
        )
    # Raw keeps the second copy as delivered; staging merges each of its rows into the first,
    # but for the rows that broke a rule in the first copy too, which are set aside again; the
    # quality report counts them. Nothing else changes: core and every mart are as they were.
    assert lines > 0
    assert merged + quarantined == lines
    assert merged > quarantined
    changed = {name for name in before if after[name] != before[name]}
    set_aside_again = {"quarantine.staging_rejects"} if quarantined else set()
    assert (
        changed
        == {
            "core.quality_report",
            "quarantine.merged_duplicates",
            "raw.deliveries",
            "raw.store_purchases",
        }
        | set_aside_again
    )
