"""The published copy analysts read: replaced whole after a good run, left as it was by a run
whose blocking check failed, and never in the way of a run while an analyst holds it open."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline.publish import publish, published_asset, stored_version
from crm_pipeline.resources import WarehouseResource

FACTS = dg.AssetKey(["core", "facts"])


def _run(warehouse: Path, value: int, check_passes: bool = True) -> dg.ExecuteInProcessResult:
    """One run: an asset writes `value` into core.facts, its blocking check passes or not,
    then the published step."""

    @dg.asset(key=FACTS, check_specs=[dg.AssetCheckSpec("good", asset=FACTS, blocking=True)])
    def facts(warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.connect() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS core")
            conn.execute("CREATE OR REPLACE TABLE core.facts AS SELECT ? AS value", [value])
        return dg.MaterializeResult(
            check_results=[dg.AssetCheckResult(check_name="good", passed=check_passes)]
        )

    return dg.materialize(
        [facts, published_asset([FACTS])],
        resources={"warehouse": WarehouseResource(path=str(warehouse))},
        raise_on_error=False,
    )


def _published_value(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as conn:
        return conn.execute("SELECT value FROM core.facts").fetchall()[0][0]


ANALYST = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1], read_only=True)
print(conn.execute("SELECT value FROM core.facts").fetchall()[0][0], flush=True)
sys.stdin.readline()  # hold the copy open until the run is over
print(conn.execute("SELECT value FROM core.facts").fetchall()[0][0], flush=True)
"""


def test_a_good_run_publishes_while_an_analyst_holds_the_old_copy_open(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    published = tmp_path / "published.duckdb"
    assert _run(warehouse, 1).success
    assert _published_value(published) == 1
    # The analyst is another process, as a DuckDB CLI or a notebook would be.
    analyst = subprocess.Popen(
        [sys.executable, "-c", ANALYST, str(published)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert analyst.stdout.readline().strip() == "1"
        assert _run(warehouse, 2).success  # the analyst's open copy is not in the run's way
        assert _published_value(published) == 2
        # The analyst goes on reading the copy they opened, whole.
        out, _ = analyst.communicate("\n", timeout=60)
        assert out.strip() == "1"
    finally:
        analyst.kill()
    assert not list(tmp_path.glob("*.partial"))


def test_a_run_whose_blocking_check_fails_leaves_the_published_copy_untouched(
    tmp_path: Path,
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    published = tmp_path / "published.duckdb"
    assert _run(warehouse, 1).success
    before = published.stat().st_mtime_ns
    result = _run(warehouse, 2, check_passes=False)
    assert not result.success
    skipped = [e.asset_key for e in result.get_asset_materialization_events()]
    assert dg.AssetKey(["warehouse", "published"]) not in skipped
    assert _published_value(published) == 1 and published.stat().st_mtime_ns == before


def test_a_warehouse_in_duckdb_2s_format_is_published_once_in_the_format_1x_clients_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:  # as versions before storage_version made it
        conn.execute("CREATE TABLE sales AS SELECT range AS amount FROM range(1000)")
    warehouse = WarehouseResource(path=str(path))
    assert stored_version(warehouse) == "v2.0.0"
    assert publish(warehouse) == [("main.sales", 1000)]
    assert stored_version(warehouse) == warehouse.storage_version == "v1.5.0"
    cli = Path(sys.executable).with_name("duckdb")  # the DuckDB CLI, a 1.x release
    done = subprocess.run(
        [str(cli), "-readonly", "-csv", str(warehouse.published_path()), "-c", "FROM sales"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.split()) == 1 + 1000


def test_files_written_anew_keep_the_permissions_an_operator_gave_them(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:  # in DuckDB 2's format: publish rewrites it
        conn.execute("CREATE TABLE sales AS SELECT range AS amount FROM range(10)")
    warehouse = WarehouseResource(path=str(path))
    published = warehouse.published_path()
    published.write_bytes(b"")
    path.chmod(0o600)
    published.chmod(0o640)
    publish(warehouse)  # the warehouse rewritten in its place, the copy replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(published.stat().st_mode) == 0o640
