"""The published copy analysts read: replaced whole after a good run, left as it was by a run
whose blocking check failed, and never in the way of a run while an analyst holds it open."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipeline.cli import main
from crm_pipeline.failures import ActionableError, damaged_file
from crm_pipeline.publish import publish, published_asset, stored_version
from crm_pipeline.resources import WarehouseResource, WarehouseUnavailable

# A table of the warehouse's contracts (one the published copy holds), written as a run would.
FACTS = dg.AssetKey(["analytics", "model_runs"])


def _run(warehouse: Path, value: int, check_passes: bool = True) -> dg.ExecuteInProcessResult:
    """One run: an asset writes `value` into analytics.model_runs, its blocking check passes or
    not, then the published step."""

    @dg.asset(key=FACTS, check_specs=[dg.AssetCheckSpec("good", asset=FACTS, blocking=True)])
    def facts(warehouse: WarehouseResource) -> dg.MaterializeResult:
        with warehouse.connect() as conn:
            conn.execute("CREATE SCHEMA IF NOT EXISTS analytics")
            conn.execute(
                "CREATE OR REPLACE TABLE analytics.model_runs AS SELECT ? AS customers", [value]
            )
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
        return conn.execute("SELECT customers FROM analytics.model_runs").fetchall()[0][0]


ANALYST = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1], read_only=True)
print(conn.execute("SELECT customers FROM analytics.model_runs").fetchall()[0][0], flush=True)
sys.stdin.readline()  # hold the copy open until the run is over
print(conn.execute("SELECT customers FROM analytics.model_runs").fetchall()[0][0], flush=True)
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


def _duckdb_cli(path: Path, query: str) -> str:
    """What the DuckDB CLI on PyPI, a 1.x release, prints for a query of a file, read-only."""
    cli = Path(sys.executable).with_name("duckdb")
    done = subprocess.run(
        [str(cli), "-readonly", "-csv", str(path), "-c", query],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _duckdb_2_warehouse(path: Path, rows: int) -> WarehouseResource:
    """A warehouse file in DuckDB 2's format, as versions before storage_version made it."""
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE SCHEMA core")
        conn.execute("CREATE TABLE core.stores AS SELECT range AS store_id FROM range(?)", [rows])
        conn.execute("CREATE TABLE main.sales AS SELECT range AS amount FROM range(?)", [rows])
    return WarehouseResource(path=str(path))


def test_a_warehouse_in_duckdb_2s_format_is_published_once_in_the_format_1x_clients_open(
    tmp_path: Path,
) -> None:
    warehouse = _duckdb_2_warehouse(tmp_path / "warehouse.duckdb", 1000)
    whole = warehouse.model_copy(update={"published_content": "whole"})
    assert stored_version(warehouse) == "v2.0.0"
    assert publish(whole).tables == [("core.stores", 1000), ("main.sales", 1000)]
    assert stored_version(warehouse) == warehouse.storage_version == "v1.5.0"
    assert len(_duckdb_cli(warehouse.published_path(), "FROM sales").split()) == 1 + 1000


def test_the_pseudonymous_copy_and_the_warehouse_are_written_in_the_format_1x_clients_open(
    tmp_path: Path,
) -> None:
    warehouse = _duckdb_2_warehouse(tmp_path / "warehouse.duckdb", 1000)
    done = publish(warehouse)
    # A table no contract describes may hold anything: it stays in the warehouse.
    assert done.tables == [("core.stores", 1000)] and done.left_out == ["main.sales"]
    # The warehouse is rewritten once too: the DuckDB CLI installed with it opens it.
    assert stored_version(warehouse) == "v1.5.0"
    assert _duckdb_cli(Path(warehouse.path), "SELECT count(*) FROM main.sales").split()[1] == "1000"
    assert _duckdb_cli(warehouse.published_path(), "SELECT sum(store_id) FROM core.stores").split(
        "\n"
    )[1] == str(sum(range(1000)))


def test_a_published_content_setting_of_neither_kind_is_named(tmp_path: Path) -> None:
    warehouse = _duckdb_2_warehouse(tmp_path / "warehouse.duckdb", 10)
    wrong = warehouse.model_copy(update={"published_content": "all"})
    with pytest.raises(ActionableError, match="CRM_PUBLISHED_CONTENT 'all' is neither"):
        publish(wrong)
    assert not wrong.published_path().exists()


def test_files_written_anew_keep_the_permissions_an_operator_gave_them(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    warehouse = _duckdb_2_warehouse(path, 10)
    whole = warehouse.model_copy(update={"published_content": "whole"})
    published = warehouse.published_path()
    published.write_bytes(b"")
    path.chmod(0o600)
    published.chmod(0o640)
    publish(whole)  # in DuckDB 2's format: the warehouse rewritten in its place, the copy replaced
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(published.stat().st_mode) == 0o640
    publish(warehouse)  # the pseudonymous copy, written anew, keeps them too
    assert stat.S_IMODE(published.stat().st_mode) == 0o640


def test_a_published_path_that_names_what_is_no_published_copy_is_refused(
    tmp_path: Path,
) -> None:
    # A slip in CRM_PUBLISHED replaced the warehouse, the key secret or the shop's database
    # with the copy, and said it had published.
    path = tmp_path / "warehouse.duckdb"
    warehouse = _duckdb_2_warehouse(path, 10)
    secret = tmp_path / "customer_key.secret"
    secret.write_text("0123456789abcdef" * 4)
    for target, said in (
        (path, f"CRM_PUBLISHED makes the published copy's path {path} the warehouse itself"),
        (secret, f"CRM_PUBLISHED makes {secret} the published copy's path, and that is no DuckDB"),
        (tmp_path, f"CRM_PUBLISHED makes {tmp_path} the published copy's path, and that is no"),
    ):
        aimed = warehouse.model_copy(update={"published": str(target)})
        with pytest.raises(ActionableError, match=re.escape(said)):
            publish(aimed)
    assert secret.read_text() == "0123456789abcdef" * 4
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM duckdb_tables()").fetchone()[0] > 0
    # A copy published before, or an empty file made to set its permissions, is replaced.
    publish(warehouse)
    publish(warehouse)
    assert (
        warehouse.model_copy(update={"published": str(tmp_path / "new.duckdb")}).published_problem()
        is None
    )


# Writes the warehouse as a run's step does, and prints the modes of the WAL it leaves beside
# it and of a first published copy. A process of its own: the umask is the process's.
_WRITER = """
import os, stat, sys
from crm_pipeline.publish import publish
from crm_pipeline.resources import WarehouseResource

def mode(path):
    return oct(stat.S_IMODE(os.stat(path).st_mode))

warehouse = WarehouseResource(path=sys.argv[1], published_content="whole")
with warehouse.connect() as conn:
    conn.execute("SET wal_autocheckpoint = '1TB'")
    conn.execute("CREATE OR REPLACE TABLE core.stores AS SELECT 'Anna.Berg@gmail.com' AS email")
    print(mode(sys.argv[1] + ".wal"))
publish(warehouse)
print(mode(warehouse.published_path()))
"""


def test_files_a_run_writes_beside_the_warehouse_are_no_more_readable_than_it(
    tmp_path: Path,
) -> None:
    # With the umask most systems give (022), a warehouse an operator made private left its
    # WAL, holding the rows being written, readable by every user of the machine.
    path = tmp_path / "warehouse.duckdb"
    _duckdb_2_warehouse(path, 10)
    for warehouse_mode, expected in ((0o600, "0o600"), (0o640, "0o640")):
        path.chmod(warehouse_mode)
        path.with_name("published.duckdb").unlink(missing_ok=True)
        written = subprocess.run(
            [sys.executable, "-c", _WRITER, str(path)],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=lambda: os.umask(0o022),
        )
        assert written.stdout.split() == [expected, expected], warehouse_mode


def test_a_stopped_publish_leaves_nothing_that_stops_the_next_one(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    assert _run(warehouse, 1).success
    # A WAL beside the copy being written, as a publish killed midway leaves it: another
    # database's, which DuckDB would refuse to replay into the next copy.
    other = tmp_path / "other.duckdb"
    with duckdb.connect(str(other)) as conn:
        conn.execute("PRAGMA disable_checkpoint_on_shutdown")
        conn.execute("CREATE TABLE leftover AS SELECT 1 AS a")
    for content in ("whole", "pseudonymous"):
        resource = WarehouseResource(path=str(warehouse), published_content=content)
        partial = resource.published_path().with_name("published.duckdb.partial")
        (partial.parent / (partial.name + ".wal")).write_bytes(
            other.with_name("other.duckdb.wal").read_bytes()
        )
        assert publish(resource).tables == [("analytics.model_runs", 1)], content
        assert _published_value(resource.published_path()) == 1


def test_a_damaged_warehouse_file_is_said_to_be_damaged_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            "CREATE TABLE t AS SELECT range AS i, md5(range::VARCHAR) AS s FROM range(200000)"
        )
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 10])  # cut short: a copy that stopped, a full disk
    opened = WarehouseResource(path=str(path)).connect()
    with pytest.raises(WarehouseUnavailable, match="is damaged .* Restore it from your backup"):
        opened.__enter__()
    # Blocks changed on disk: DuckDB finds it when it reads them, inside a step.
    damaged = bytearray(whole)
    damaged[4096 * 3 + 262144 : 4096 * 7 + 262144] = bytes(4096 * 4)
    path.write_bytes(bytes(damaged))
    with duckdb.connect(str(path)) as conn, pytest.raises(duckdb.Error) as read:
        conn.execute("SELECT count(DISTINCT s) FROM t").fetchall()
    assert damaged_file(read.value) and "Corrupt database file" in str(read.value)


def test_the_summary_and_dictionary_say_what_the_published_copy_holds_as_read_from_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # A copy published whole (by the setting, or by a version from before the pseudonymous
    # copy) holds personal data until the next publish, whatever the setting says now.
    path = tmp_path / "warehouse.duckdb"
    warehouse = WarehouseResource(path=str(path))
    with warehouse.connect() as conn:
        conn.execute("CREATE SCHEMA raw")
        conn.execute("CREATE TABLE raw.online_accounts AS SELECT 'ann@example.com' AS email")
    monkeypatch.setenv("CRM_WAREHOUSE", str(path))
    monkeypatch.delenv("CRM_PUBLISHED_CONTENT", raising=False)

    def said(command: str) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_code:
            main([command])
        assert exit_code.value.code == 0
        return " ".join(capsys.readouterr().out.split())

    assert "No published copy yet (a run whose checks pass publishes one); query the " in (
        said("summary")
    )
    publish(warehouse.model_copy(update={"published_content": "whole"}))
    assert (
        "(read-only; swapped in after each good run; the whole warehouse, personal data "
        "included; the next run publishes it pseudonymous, as CRM_PUBLISHED_CONTENT says)"
    ) in said("summary")
    assert f"{warehouse.published_path()} holds the delivered records and personal values" in (
        said("dictionary")
    )
    publish(warehouse)
    assert "(read-only; swapped in after each good run; no personal data: " in said("summary")
    assert "holds the delivered records" not in said("dictionary")
