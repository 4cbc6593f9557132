"""What an operator reads when something fails: a failed contract names the rows by key and the
rule they broke; a failed run names the asset, the source, the partitions and the cause."""

from __future__ import annotations

import codecs
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pandera.pandas as pa
import pytest
import sqlalchemy as sa
from dagster._core.execution.backfill import BulkActionStatus, PartitionBackfill
from dagster_shared.serdes import serialize_value
from pandera.typing import Series

from crm_pipeline import landing
from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.cli import main
from crm_pipeline.contracts import repeated_keys, validate_query
from crm_pipeline.definitions import defs
from crm_pipeline.failures import _without_password, explained, safe_url
from crm_pipeline.raw.assets import raw_assets
from crm_pipeline.reporting import masked, preview
from crm_pipeline.resources import (
    COMMAND_PID_TAG,
    WAITING_TAG,
    WarehouseResource,
    WarehouseUnavailable,
)
from crm_pipeline.run import failure_messages, prepare_instance, range_tags, setting_config
from crm_pipeline_tests.conftest import bind
from crm_pipeline_tests.landing_builder import DAY1, DAY2


class Customers(pa.DataFrameModel):
    customer_key: Series[str]
    income: Series[float] = pa.Field(ge=0, nullable=True)


@pytest.fixture()
def customers() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE customers AS SELECT * FROM (VALUES "
        "('C1', 100.0), ('C2', -5.0), ('C3', NULL), ('C3', 7.0)) AS t(customer_key, income)"
    )
    return conn


def test_a_contract_failure_names_the_row_by_its_key_and_the_broken_rule(customers) -> None:
    # Batches of two rows: the failing row is named by key, not by its place in a batch.
    outcome = validate_query(
        customers, "SELECT * FROM customers", [], Customers, keys=["customer_key"], batch_rows=2
    )
    assert not outcome.passed and outcome.rows == 4
    assert outcome.examples == [
        {
            "row": "customer_key=C2",
            "column": "income",
            "check": "greater_than_or_equal_to(0)",
            "failure_case": "-5.0",
        }
    ]
    assert "- customer_key=C2: column income failed greater_than_or_equal_to(0)" in (
        outcome.describe()
    )
    assert "| customer_key=C2 | income" in outcome.metadata()["failing_rows"].value


def test_failures_of_batches_checked_side_by_side_are_all_counted_and_named_in_row_order() -> None:
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE customers AS SELECT 'C' || i AS customer_key, "
        "CASE WHEN i IN (3, 17, 18, 41) THEN -i ELSE i END::DOUBLE AS income FROM range(50) t(i)"
    )
    outcome = validate_query(
        conn, "SELECT * FROM customers ORDER BY income", [], Customers, ["customer_key"], 4
    )
    assert (outcome.rows, outcome.failures) == (50, 4)
    assert [e["row"] for e in outcome.examples] == [f"customer_key=C{i}" for i in (41, 18, 17, 3)]


class Labels(pa.DataFrameModel):
    label: Series[str] = pa.Field(nullable=True)


def test_a_text_column_passes_its_type_once_and_a_column_of_other_values_is_named_by_row() -> None:
    # The string dtype is answered once per column (crm_pipeline.checks); a column of objects
    # is still checked value by value.
    assert (
        Labels.to_schema()
        .columns["label"]
        .dtype.check(pa.dtypes.String(), pd.Series(["a", None], dtype="str"))
        is True
    )
    Labels.validate(pd.DataFrame({"label": ["a", "b", None]}))
    with pytest.raises(pa.errors.SchemaErrors) as raised:
        Labels.validate(pd.DataFrame({"label": pd.Series(["a", 7, None], dtype=object)}), lazy=True)
    cases = raised.value.failure_cases
    assert cases[["column", "failure_case", "index"]].values.tolist() == [["label", 7, 1]]


class Accounts(pa.DataFrameModel):
    account_id: Series[str]
    email: Series[str] = pa.Field(str_matches=r"^\S+@\S+$", metadata={"personal_data": True})


def test_a_failing_personal_value_is_shown_by_its_shape_not_its_value() -> None:
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE accounts AS SELECT * FROM (VALUES "
        "('A1', 'anna@mail.com'), ('A2', 'Bo Li gmail.com')) AS t(account_id, email)"
    )
    outcome = validate_query(conn, "SELECT * FROM accounts", [], Accounts, keys=["account_id"])
    assert [(e["row"], e["column"], e["failure_case"]) for e in outcome.examples] == [
        ("account_id=A2", "email", "Xx Xx xxxxx.xxx")
    ]
    assert "Bo Li" not in outcome.describe()
    assert "Xx Xx xxxxx.xxx" in outcome.metadata()["failing_rows"].value


def test_a_repeated_key_is_named_with_its_number_of_rows(customers) -> None:
    repeats = repeated_keys(customers, "customers", ["customer_key"])
    assert repeats.count == 1
    assert repeats.describe("customers") == (
        "1 values of (customer_key) repeat in customers: customer_key=C3 (2 rows)"
    )


def test_a_repeated_key_across_partitions_names_its_days_for_the_values_shown() -> None:
    # Seven values repeat (a NULL key among them); the five shown are the most repeated, then
    # by key, each with the days it was delivered on; rows outside `where` do not count.
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE t AS SELECT * FROM (VALUES "
        "('A', 1, DATE '2025-03-02'), ('A', 1, DATE '2025-03-01'), ('A', 1, DATE '2025-03-02'), "
        "(NULL, 2, DATE '2025-03-03'), (NULL, 2, DATE '2025-03-01'), (NULL, 2, DATE '2025-03-03'), "
        "('B', 1, DATE '2025-03-01'), ('B', 1, DATE '2025-03-01'), "
        "('C', 1, DATE '2025-03-01'), ('C', 1, DATE '2025-03-04'), "
        "('D', 1, DATE '2025-03-01'), ('D', 1, DATE '2025-03-05'), "
        "('E', 1, DATE '2025-03-01'), ('E', 1, DATE '2025-03-06'), "
        "('F', 1, DATE '2025-03-01'), ('F', 1, DATE '2025-03-07'), "
        "('G', 1, DATE '2025-03-01'), ('G', 1, DATE '2029-01-01'), "
        "('H', 1, DATE '2025-03-01')) AS t(k, n, partition_date)"
    )
    repeats = repeated_keys(
        conn, "t", ["k", "n"], "partition_date < ?", [date(2026, 1, 1)], partitions=True
    )
    assert repeats.count == 7
    assert [(e["k"], e["rows"], e["partitions"]) for e in repeats.examples] == [
        ("A", 3, "2025-03-01, 2025-03-02"),
        (None, 3, "2025-03-01, 2025-03-03"),
        ("B", 2, "2025-03-01"),
        ("C", 2, "2025-03-01, 2025-03-04"),
        ("D", 2, "2025-03-01, 2025-03-05"),
    ]


def _zone(tiny_zone: Path, tmp_path: Path) -> Path:
    zone = tmp_path / "zone"
    shutil.copytree(tiny_zone, zone)
    return zone


def _load(
    zone: Path,
    warehouse: Path,
    table: str,
    instance: dg.DagsterInstance | None = None,
    also: str | None = None,
    **warehouse_settings,
) -> dg.ExecuteInProcessResult:
    assets = [a for a in raw_assets if a.key.path[-1] in (table, also)]
    resources = bind(zone, warehouse)
    resources["warehouse"] = WarehouseResource(path=str(warehouse), **warehouse_settings)
    return dg.materialize(
        assets,
        resources=resources,
        tags=range_tags(DAY1, DAY2),
        raise_on_error=False,
        instance=instance,
    )


def test_a_run_without_the_shop_database_names_it_the_partitions_and_the_cause(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone = _zone(tiny_zone, tmp_path)
    (zone / landing.SHOP_DATABASE_FILE).unlink()
    result = _load(zone, tmp_path / "warehouse.duckdb", "online_orders")
    assert not result.success
    [message] = failure_messages(result)
    assert message.startswith(
        f"raw__online_orders: raw.online_orders failed for partitions {DAY1}..{DAY2}"
    )
    assert f"the online shop database sqlite:///{zone / landing.SHOP_DATABASE_FILE}" in message
    assert "table 'orders'" in message
    assert "Cause: ShopSchemaError: No online shop database" in message
    assert "set CRM_SHOP_URL" in message
    # The error says what to do, so the step fails at once instead of retrying for minutes.
    assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


def _command_line_on(zone: Path, warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the crm-pipeline command reads: this landing zone and warehouse, and
    the zone's own shop database."""
    monkeypatch.setenv("CRM_LANDING_DIR", str(zone))
    monkeypatch.setenv("CRM_WAREHOUSE", str(warehouse))
    monkeypatch.delenv("CRM_SHOP_URL", raising=False)


def test_the_command_line_prints_why_a_run_failed_when_a_shop_table_is_dropped(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    zone = _zone(tiny_zone, tmp_path)
    with sa.create_engine(landing.shop_url_for(zone)).begin() as db:
        db.execute(sa.text("DROP TABLE order_items"))
    _command_line_on(zone, tmp_path / "warehouse.duckdb", monkeypatch)
    with pytest.raises(SystemExit) as exit_code:
        main(["materialize", "--select", "key:raw/online_order_items"])
    assert exit_code.value.code == 1
    printed = capsys.readouterr().err
    assert (
        f"FAILED raw__online_order_items: raw.online_order_items failed for partitions {DAY1}..{DAY2}"
        in printed
    )
    assert "has no table 'order_items'" in printed and "Point CRM_SHOP_URL" in printed


def _shop_down(tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The command line on a copy of the zone whose shop database is gone; the warehouse."""
    zone = _zone(tiny_zone, tmp_path)
    (zone / landing.SHOP_DATABASE_FILE).unlink()
    _command_line_on(zone, tmp_path / "warehouse.duckdb", monkeypatch)
    return tmp_path / "warehouse.duckdb"


def _exit_code(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_code:
        main(["materialize", *args])
    return exit_code.value.code


def _count(warehouse: Path, sql: str) -> int:
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        return conn.execute(sql).fetchall()[0][0]


def test_the_command_line_runs_unpartitioned_assets_without_asking_the_shop_for_its_days(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Reference data (or the marts) need no range of days, so a shop that is down does not
    # stop them: the days are only listed when a partitioned asset is selected.
    warehouse = _shop_down(tiny_zone, tmp_path, monkeypatch)
    assert _exit_code("--select", "key:raw/products") == 0
    assert "raw/products (no partitioned asset among them)" in capsys.readouterr().out
    assert _count(warehouse, "SELECT count(*) FROM raw.products") > 0
    assert _exit_code("--select", "key:raw/online_orders") == 2
    assert "No online shop database" in capsys.readouterr().err


def test_a_range_given_on_the_command_line_needs_no_shop_to_list_days(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    warehouse = _shop_down(tiny_zone, tmp_path, monkeypatch)
    assert _exit_code("--select", "key:raw/store_purchases", "--first", DAY1, "--last", DAY2) == 0
    assert f"event sources over {DAY1}..{DAY2}" in capsys.readouterr().out
    days = "SELECT count(DISTINCT partition_date) FROM raw.store_purchases"
    assert _count(warehouse, days) == 2


def test_an_unreadable_delivery_names_the_folder_the_day_and_what_to_do(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone = _zone(tiny_zone, tmp_path)
    (zone / "store_purchases" / DAY2 / "late.csv").mkdir()  # a folder where a file should be
    result = _load(zone, tmp_path / "warehouse.duckdb", "store_purchases")
    [message] = failure_messages(result)
    assert f"raw.store_purchases failed for partitions {DAY1}..{DAY2}" in message
    assert f"files under {zone / 'store_purchases'}" in message
    assert "Cause: " in message and "What to do: Check that" in message


def test_a_failure_message_never_shows_the_database_password(tmp_path: Path) -> None:
    url = "postgresql://crm:s3cret@db.example:5432/shop"

    @dg.asset(partitions_def=dg.DailyPartitionsDefinition(start_date=DAY1))
    def orders(context) -> None:  # unannotated: under `from __future__` Dagster sees a string
        with explained(context, "the shop", "Check CRM_SHOP_URL.", url):
            raise ConnectionError(f"could not connect to {url}")

    result = dg.materialize([orders], partition_key=DAY2, raise_on_error=False)
    [message] = failure_messages(result)
    assert "s3cret" not in message
    assert f"orders failed for partition {DAY2}, reading the shop." in message
    assert "could not connect to postgresql://crm:***@db.example:5432/shop" in message


def _raw_rows(warehouse: Path, table: str) -> int:
    return _count(warehouse, f"SELECT count(*) FROM raw.{table}")


@pytest.mark.parametrize("table", ["store_purchases", "online_orders"])
def test_a_range_whose_first_day_is_after_its_last_fails_at_once_and_keeps_the_loaded_days(
    tiny_zone: Path, tmp_path: Path, table: str
) -> None:
    zone, warehouse = _zone(tiny_zone, tmp_path), tmp_path / "warehouse.duckdb"
    assert _load(zone, warehouse, table).success
    loaded = _raw_rows(warehouse, table)
    assert loaded > 0
    assets = [a for a in raw_assets if a.key.path[-1] == table]
    result = dg.materialize(
        assets, resources=bind(zone, warehouse), tags=range_tags(DAY2, DAY1), raise_on_error=False
    )
    [message] = failure_messages(result)
    assert f"range of days {DAY2}..{DAY1} holds no day" in message
    assert _raw_rows(warehouse, table) == loaded  # read as no bounds, it cleared the table
    assert not any(e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY for e in result.all_events)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (sa.exc.OperationalError("SELECT 1", {}, ConnectionRefusedError("refused")), True),
        (ConnectionResetError("reset by peer"), True),
        (IndexError("list index out of range"), False),
        (sa.exc.NoSuchModuleError("Can't load plugin: sqlalchemy.dialects:postgres"), False),
        # ADBC's own class for a SQLite shop that a writer holds.
        (RuntimeError("ADBC_STATUS_IO (10): [SQLite] database is locked"), True),
    ],
)
def test_only_a_database_out_of_reach_is_retried(error: Exception, retried: bool) -> None:
    @dg.asset(retry_policy=dg.RetryPolicy(max_retries=1))
    def orders(context) -> None:
        with explained(context, "the shop", "Check CRM_SHOP_URL."):
            raise error

    result = dg.materialize([orders], raise_on_error=False)
    retries = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert len(retries) == (1 if retried else 0)


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--first", "2025-13-01"], "argument --first: '2025-13-01' is not a day as YYYY-MM-DD"),
        (["--last", "31/12/2025"], "argument --last: '31/12/2025' is not a day as YYYY-MM-DD"),
        (["--first", DAY2, "--last", DAY1], f"--first {DAY2} is after --last {DAY1}: give"),
        (["--first", "2025-06-01"], "(the last day delivered): give a first day on or before"),
        (["--first", "2099-01-01"], "--first 2099-01-01 is after the last partition day"),
        (["--first", "2001-01-01", "--last", "2001-01-02"], "(CRM_FIRST_DAY): give a later"),
        (["--first", DAY1, "--last", "2099-01-01"], "after the last partition day"),
        (["--last", "2024-12-31"], "--last 2024-12-31 is before the first partition day"),
        (["--select", "group:marts"], "--select 'group:marts' matches no asset."),
        (["--select", "key:raw.products"], "is not a selection of assets"),
    ],
)
def test_the_command_line_refuses_what_it_cannot_run_and_says_what_to_give(
    tiny_zone: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
    args: list[str],
    said: str,
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    _command_line_on(_zone(tiny_zone, tmp_path), warehouse, monkeypatch)
    assert _exit_code(*args) == 2
    assert said in capsys.readouterr().err
    assert not warehouse.exists()  # refused before any run


def test_a_setting_that_is_not_a_day_is_named_with_what_to_give(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(Path(sys.executable).with_name("crm-pipeline")), "materialize"],
        env={**os.environ, "CRM_FIRST_DAY": "2025/01/01", "CRM_WAREHOUSE": str(tmp_path / "w")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "CRM_FIRST_DAY='2025/01/01' is not a day as YYYY-MM-DD: set it to the first delivery "
        "day, such as 2025-01-01, or unset it."
    )


def test_a_warehouse_another_process_holds_is_named_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    hold = f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('open', flush=True); "
    holder = subprocess.Popen(
        [sys.executable, "-c", hold + "sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with (
            pytest.raises(WarehouseUnavailable) as error,
            WarehouseResource(path=str(path)).connect(),
        ):
            pass
    finally:
        holder.communicate("")
    message = str(error.value)
    assert message.startswith(f"Cannot open the warehouse {path} for writing: ")
    assert "Could not set lock" in message and "wait for it to end or close it" in message


def test_a_run_of_a_selection_publishes_it_unless_told_not_to(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = _shop_down(tiny_zone, tmp_path, monkeypatch)
    published = warehouse.with_name("published.duckdb")
    loaded = "SELECT max(loaded_at) FROM raw.deliveries WHERE source = 'products'"
    assert _exit_code("--select", "key:raw/products") == 0
    first = _count(warehouse, loaded)
    assert _count(published, loaded) == first
    assert _exit_code("--select", "key:raw/products", "--no-publish") == 0
    assert _count(warehouse, loaded) > first
    assert _count(published, loaded) == first


def _loaded(tiny_zone: Path, tmp_path: Path, table: str) -> tuple[Path, Path, int]:
    """A copy of the zone with `table` loaded: the zone, the warehouse and its raw rows."""
    zone, warehouse = _zone(tiny_zone, tmp_path), tmp_path / "warehouse.duckdb"
    assert _load(zone, warehouse, table).success
    rows = _raw_rows(warehouse, table)
    assert rows > 0
    return zone, warehouse, rows


def test_a_reference_file_no_row_of_which_loads_fails_and_leaves_the_table_as_it_was(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone, warehouse, stores = _loaded(tiny_zone, tmp_path, "stores")
    reference = zone / "reference" / "stores.csv"
    reference.write_text(reference.read_text(encoding="utf-8").replace(",", ";"), "utf-8")
    result = _load(zone, warehouse, "stores")
    [message] = failure_messages(result)
    assert "Cause: ActionableError: No row of reference/stores.csv could be loaded (" in message
    assert "no partition (the whole table)" in message  # in a run of a range of days
    assert "header_mismatch" in message and "raw.stores is left as it was" in message
    # What is wrong with the file, though the rejects are rolled back with the load.
    assert (
        "2 row(s): header_mismatch (reference/stores.csv: header lacks ['store_id', 'city', "
        "'region'] (it has ['store_id;city;region']); its values are separated by semicolons: "
        "export it separated by commas; fix the header"
    ) in message
    assert _raw_rows(warehouse, "stores") == stores
    # Not a byte, not even the header: a failed export, refused too.
    for nothing in (b"", codecs.BOM_UTF8 + b"\r\n"):
        reference.write_bytes(nothing)
        [message] = failure_messages(_load(zone, warehouse, "stores"))
        assert (
            "No row of reference/stores.csv could be loaded (the file is empty, not even a "
            "header line). Fix the file and deliver it again; raw.stores is left as it was"
        ) in message
        assert _raw_rows(warehouse, "stores") == stores
    # A header and no rows is a business without stores: loaded as none.
    reference.write_text("store_id,city,region\n", "utf-8")
    assert _load(zone, warehouse, "stores").success
    assert _raw_rows(warehouse, "stores") == 0


def test_an_empty_daily_csv_file_loads_as_no_rows_and_the_check_names_it(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone, warehouse = _zone(tiny_zone, tmp_path), tmp_path / "warehouse.duckdb"
    [emptied] = (zone / "store_purchases" / DAY2).iterdir()
    emptied.write_bytes(b"")
    result = _load(zone, warehouse, "store_purchases")
    assert result.success
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "rows_accounted"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    name = emptied.relative_to(zone).as_posix()
    assert (
        f"1 file(s) empty, without even a header line, as a failed export leaves them: {name}"
        in (check.description)
    )
    assert check.metadata["empty_files"].value == [name]
    days = "SELECT DISTINCT CAST(partition_date AS VARCHAR) FROM raw.store_purchases"
    assert _count(warehouse, days) == DAY1
    # A JSON Lines file has no header: empty, it is a day without inquiries.
    for emptied in (zone / "inquiries" / DAY2).iterdir():
        emptied.write_bytes(b"")
    result = _load(zone, warehouse, "inquiries")
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "rows_accounted"]
    assert "empty" not in check.description


def test_a_day_whose_folder_is_missing_fails_and_keeps_the_day_as_it_was(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone, warehouse, loaded = _loaded(tiny_zone, tmp_path, "store_purchases")
    shutil.rmtree(zone / "store_purchases" / DAY2)
    [message] = failure_messages(_load(zone, warehouse, "store_purchases"))
    assert f"No store_purchases/{DAY2}/ folder under {zone} (days without one: {DAY2})" in message
    assert "an empty folder if store_purchases had nothing that day" in message
    assert f"partitions {DAY1}..{DAY2}" in message
    assert _raw_rows(warehouse, "store_purchases") == loaded


def test_a_daily_file_delivered_again_unreadable_fails_and_keeps_the_rows_it_loaded_before(
    tiny_zone: Path, tmp_path: Path
) -> None:
    zone, warehouse, loaded = _loaded(tiny_zone, tmp_path, "store_purchases")
    pos = zone / "store_purchases" / DAY1 / "pos.csv"
    broken = pos.read_text(encoding="utf-8").replace(",", ";")
    header = pos.read_text(encoding="utf-8").splitlines()[0] + "\n"
    # A changed delimiter, a failed export, and a header only, each in place of the file that
    # loaded: none of them says the day's sales are gone.
    for content, why in (
        (broken, "3 row(s): header_mismatch (store_purchases/2025-01-01/pos.csv: header lacks"),
        ("", "the file is empty, not even a header line)"),
        (header, "it now holds no record)"),
    ):
        pos.write_text(content, "utf-8")
        [message] = failure_messages(_load(zone, warehouse, "store_purchases"))
        assert f"No row of store_purchases/{DAY1}/pos.csv could be loaded ({why}" in message
        assert (
            ", and raw.store_purchases held 3 rows from it. Fix the file and deliver it again"
        ) in message
        assert _raw_rows(warehouse, "store_purchases") == loaded
    # So is a JSON Lines file that loaded, delivered again empty.
    zone_i, warehouse_i, loaded_i = _loaded(tiny_zone, tmp_path / "i", "inquiries")
    [jsonl] = (zone_i / "inquiries" / DAY1).iterdir()
    jsonl.write_bytes(b"")
    [message] = failure_messages(_load(zone_i, warehouse_i, "inquiries"))
    name = jsonl.relative_to(zone_i).as_posix()
    assert f"No row of {name} could be loaded (it now holds no record), and raw.inquiries held" in (
        message
    )
    assert "remove the file and re-materialize the day" in message
    assert _raw_rows(warehouse_i, "inquiries") == loaded_i
    pos.write_text(broken, "utf-8")
    # Delivered so the first time, it is set aside whole, as any reject, and the run goes on.
    fresh = tmp_path / "fresh.duckdb"
    assert _load(zone, fresh, "store_purchases").success
    assert (
        _count(
            fresh, "SELECT count(*) FROM quarantine.raw_rejects WHERE reason = 'header_mismatch'"
        )
        == 3
    )


def test_a_source_whose_folder_is_missing_fails_naming_it(tiny_zone: Path, tmp_path: Path) -> None:
    zone = _zone(tiny_zone, tmp_path)
    shutil.rmtree(zone / "inquiries")
    [message] = failure_messages(_load(zone, tmp_path / "warehouse.duckdb", "inquiries"))
    assert f"No inquiries/ folder under {zone}" in message
    assert (
        "if this source has nothing to deliver, create it with an empty folder for each day"
        in message
    )


def test_a_shop_url_whose_driver_is_missing_names_one_that_is_installed(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _command_line_on(_zone(tiny_zone, tmp_path), tmp_path / "warehouse.duckdb", monkeypatch)
    # psycopg 3 is not installed (psycopg2 is).
    monkeypatch.setenv("CRM_SHOP_URL", "postgresql+psycopg://crm:s3cret@127.0.0.1:1/shop")
    assert _exit_code() == 2
    printed = capsys.readouterr().err
    assert "CRM_SHOP_URL postgresql+psycopg://crm:***@127.0.0.1:1/shop needs a database driver" in (
        printed
    )
    assert "postgresql+psycopg2://" in printed and "s3cret" not in printed


def test_a_range_only_the_shop_starts_earlier_is_refused_naming_the_files_first_day(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # One order's year mistyped (or a shop older than the files) started the range a year
    # early, and the run failed for every day of every file source, with no word of why.
    zone = _zone(tiny_zone, tmp_path)
    for source in landing.DAILY_FILE_SOURCES:
        shutil.rmtree(zone / source.folder / DAY1)
    _command_line_on(zone, tmp_path / "warehouse.duckdb", monkeypatch)
    assert _exit_code("--no-publish") == 2
    said = capsys.readouterr().err
    assert f"The delivered days start at {DAY1}, the day of the shop's earliest order" in said
    assert f"give --first {DAY2}" in said
    assert _exit_code("--first", DAY2, "--no-publish") in (0, 1)


def test_a_shop_url_that_cannot_be_read_is_named_without_its_password(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    _command_line_on(_zone(tiny_zone, tmp_path), tmp_path / "warehouse.duckdb", monkeypatch)
    for url in (
        "postgresql+psycopg2://crm:s3cret@127.0.0.1:notaport/shop",
        # An @ in the password, not percent-encoded: the rest reads as a port.
        "postgresql+psycopg2://crm:s3@cret:tail@127.0.0.1:5432/shop",
    ):
        monkeypatch.setenv("CRM_SHOP_URL", url)
        assert _exit_code() == 2
        printed = capsys.readouterr().err
        assert "Traceback" not in printed
        assert "CRM_SHOP_URL <an unparseable database URL> is not a database URL" in printed
        assert "must be percent-encoded" in printed
        assert "s3" not in printed and "cret" not in printed and "tail" not in printed


def test_a_setting_given_on_the_command_line_reaches_the_run_and_a_wrong_one_is_refused(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    _command_line_on(_zone(tiny_zone, tmp_path), warehouse, monkeypatch)
    assert _exit_code("--set", "analysis.as_of=" + DAY1, "--set", "analysis.refit_days=0") == 0
    as_of = "SELECT DISTINCT CAST(as_of AS DATE) FROM mining.sales_efficiency"
    assert _count(warehouse, as_of) == date.fromisoformat(DAY1)
    capsys.readouterr()
    # Each refused before anything runs, with exit 2 and the setting named.
    refused = {
        "analysis.refit_days=soon": "analysis.refit_days = 'soon': Input should be a valid integer",
        "analysis.as_off=2025-01-01": "analysis has no setting 'as_off'",
        "as_of": "is not RESOURCE.FIELD=VALUE",
        "warehouse.path=x.duckdb": "'warehouse' is not one of analysis, mining, core_rules",
        "analysis.holdout_days=0": "analysis.holdout_days = 0: Input should be greater than 0",
        "analysis.as_of=30/06/2025": "--set analysis.as_of is '30/06/2025': give a day as "
        "YYYY-MM-DD",
        # Dagster's own, stricter, check: no fraction for a whole number.
        "analysis.holdout_days=5.0": 'Value "5.0" of type "<class \'float\'>" is not valid for '
        'expected type "Int"',
        "core_rules.as_of=2025-13-01": "give a day as YYYY-MM-DD",
    }
    # A text setting's value stays text (a day in ISO's basic form), not a number.
    assert setting_config(["analysis.as_of=20250630"]) == {
        "resources": {"analysis": {"config": {"as_of": "20250630"}}}
    }
    for setting, said in refused.items():
        assert _exit_code("--set", setting) == 2, setting
        printed = capsys.readouterr()
        assert said in printed.err and "Materializing" not in printed.out, setting


def test_a_recorded_run_keeps_the_shop_url_out_of_what_the_instance_stores(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = _zone(tiny_zone, tmp_path)
    _command_line_on(zone, tmp_path / "warehouse.duckdb", monkeypatch)
    # The URL would carry the shop's password; a SQLite one stands for it here.
    url = landing.shop_url_for(zone)
    monkeypatch.setenv("CRM_SHOP_URL", url)
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert _exit_code("--select", "key:raw/online_orders", "--record", "--no-publish") == 0
    instance = dg.DagsterInstance.get()  # not entered: see test_automation's instance
    [run] = instance.get_runs()
    snapshot = serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
    instance.dispose()
    assert "CRM_SHOP_URL" in snapshot and url not in snapshot
    # Marked as this command's, so a run of the UI does not wait for it in the pool.
    assert run.tags[COMMAND_PID_TAG] == str(os.getpid())
    assert _count(tmp_path / "warehouse.duckdb", "SELECT count(*) FROM raw.online_orders") > 0


def test_a_password_is_masked_however_the_url_spells_it() -> None:
    url = "postgresql+psycopg2://crm:p@ss/w@db.internal:5432/shop".replace("p@ss/w", "p%40ss%2Fw")
    assert safe_url(url) == "postgresql+psycopg2://crm:***@db.internal:5432/shop"
    assert (
        safe_url("postgresql+psycopg2://crm:secret@db:54x2/shop") == "<an unparseable database URL>"
    )
    quoted = f"could not connect to {url}: password p@ss/w refused"
    assert "p%40ss" not in _without_password(quoted, url)
    assert "p@ss/w" not in _without_password(quoted, url)
    # libpq and the drivers take a password as a query parameter too.
    query = "postgresql://crm@db:5432/shop?password=S3cr%26t&sslmode=require&sslpassword=k3y"
    assert safe_url(query) == (
        "postgresql://crm@db:5432/shop?password=***&sslmode=require&sslpassword=***"
    )
    said = _without_password(f"{query} refused password S3cr&t, key k3y", query)
    assert "S3cr" not in said and "k3y" not in said and "sslmode=require" in said
    # An ODBC connection string: masked whole, and its password wherever a message repeats it.
    odbc = "mssql+pyodbc:///?odbc_connect=DRIVER%3D%7BODBC%7D%3BUID%3Dsa%3BPWD%3DSecret3"
    assert safe_url(odbc) == "mssql+pyodbc:///?odbc_connect=***"
    assert "Secret3" not in _without_password(f"login failed: PWD=Secret3 ({odbc})", odbc)


def test_a_preview_shows_values_as_the_warehouse_writes_them_and_personal_ones_by_shape() -> None:
    with duckdb.connect() as conn:
        shown = preview(
            conn,
            "SELECT 169400.00::DECIMAL(12, 2) AS income, DATE '1980-01-02' AS birth_date, "
            "16000.00::DECIMAL(12, 2) AS spent, 'Anna.Berg@gmail.com' AS email",
            None,
            frozenset({"income", "birth_date", "email"}),
        )
    row = shown.splitlines()[2]
    assert [value.strip() for value in row.strip("|").split("|")] == [
        "999999.99",
        "9999-99-99",
        "16000.00",
        "Xxxx.Xxxx@xxxxx.xxx",
    ]


def test_a_name_in_a_script_with_combining_marks_is_masked_whole() -> None:
    # Vowel signs and viramas are marks, not letters: kept, they spelled most of the name
    # in the previews Dagster stores.
    assert masked("अनुराग शर्मा") == "xxxxxx xxxxx"
    assert masked("ถนนสุขุมวิท 21") == "xxxxxxxxxxx 99"
    assert masked("Zoe\u0308 O'Brien") == "Xxxx X'Xxxxx"


def test_an_as_of_bound_to_an_environment_variable_is_checked_with_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    @dg.asset
    def day(analysis: AnalysisSettings) -> str:
        return str(analysis.as_of_date())

    # The definitions load: until a run reads it, the variable's name is no day to check.
    bound = AnalysisSettings(as_of=dg.EnvVar("CRM_TEST_AS_OF"))
    monkeypatch.setenv("CRM_TEST_AS_OF", "2025-06-30")
    assert dg.materialize([day], resources={"analysis": bound}).output_for_node("day") == (
        "2025-06-30"
    )
    monkeypatch.setenv("CRM_TEST_AS_OF", "30/06/2025")
    failed = dg.materialize([day], resources={"analysis": bound}, raise_on_error=False)
    assert not failed.success
    assert "analysis.as_of is '30/06/2025': give a day as YYYY-MM-DD" in " ".join(
        failure_messages(failed)
    )


def _raw_loaded(tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A warehouse the command line has loaded raw into, and that command line's setting."""
    warehouse = tmp_path / "warehouse.duckdb"
    _command_line_on(_zone(tiny_zone, tmp_path), warehouse, monkeypatch)
    assert _exit_code("--select", "group:raw", "--no-publish") == 0
    return warehouse


def _writers_refused(capsys) -> list[str]:
    """What materialize, erase and rekey each said, refused (exit 2)."""
    capsys.readouterr()
    said = []
    for command in (
        ["materialize", "--select", "group:raw"],
        ["erase", "--card", "L1", "--reason", "t"],
        ["rekey"],
    ):
        with pytest.raises(SystemExit) as exit_code:
            main(command)
        assert exit_code.value.code == 2, command
        said.append(capsys.readouterr().err)
    return said


def test_commands_that_write_the_warehouse_wait_for_the_runs_of_the_instance(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    warehouse = _raw_loaded(tiny_zone, tmp_path, monkeypatch)
    loaded = _count(warehouse, "SELECT count(*) FROM raw.deliveries")
    # A run of the deployment's queue (or of `make ui`) is under way in DAGSTER_HOME.
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance = prepare_instance(home)  # not entered: see test_automation's instance
    run = instance.create_run_for_job(
        defs.resolve_job_def("daily_refresh"), status=dg.DagsterRunStatus.STARTED
    )
    instance.dispose()
    materialize, erase, rekey = _writers_refused(capsys)
    for said in (materialize, erase, rekey):
        assert f"have not ended: {run.run_id} (daily_refresh, started)" in said
    assert "launch the work in the UI" in materialize
    for said, command in ((erase, "erase"), (rekey, "rekey")):
        assert "switch the schedule and sensor off in the UI meanwhile" in said
        assert f"then run `crm-pipeline {command}` again" in said
    # Between two runs of a backfill none is under way: the backfill, still launching, is.
    instance = prepare_instance(home)
    instance.delete_run(run.run_id)
    # As the UI's launch of a backfill records it, before its daemon has launched a run.
    backfill = PartitionBackfill(
        "bfill123", BulkActionStatus.REQUESTED, False, {}, time.time(), partition_names=[DAY1]
    )
    instance.add_backfill(backfill)
    instance.dispose()
    for said in _writers_refused(capsys):
        assert "have not ended: backfill bfill123 (requested)" in said
        assert "until it is cancelled in the UI (Overview, Backfills)" in said
    # A deployment's instance this shell cannot read (its database URL not set here): no
    # telling whether a run is under way, so no run either.
    shutil.copy(Path(landing.__file__).with_name("dagster_production.yaml"), home / "dagster.yaml")
    monkeypatch.delenv("DAGSTER_PG_URL", raising=False)
    assert _exit_code("--select", "group:raw") == 2
    assert "(it reads DAGSTER_PG_URL, which is not set here)" in capsys.readouterr().err
    assert _count(warehouse, "SELECT count(*) FROM raw.deliveries") == loaded


# Holds the warehouse's lock as a command does, and DuckDB's too, until killed.
_HOLDER = """
import contextlib, os, sys, time, duckdb
from crm_pipeline.writer_lock import sole_writer
command = sys.argv[2] in ("command", "between its steps")
with sole_writer(sys.argv[1], "materialize") if command else contextlib.nullcontext():
    # A process of its own, as staging's normaliser pool forks, outliving a killed command.
    child = os.fork()
    if child == 0:
        time.sleep(120)
        os._exit(0)
    conn = None if sys.argv[2] == "between its steps" else duckdb.connect(sys.argv[1])
    print("held", child, flush=True)
    time.sleep(120)
"""


def _held(warehouse: Path, by: str) -> tuple[subprocess.Popen, int]:
    """A process holding the warehouse open for writing, a command or another program (an
    analyst's DuckDB shell on it), and the id of a process it forked."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(warehouse), by], stdout=subprocess.PIPE, text=True
    )
    said, child = holder.stdout.readline().split()
    assert said == "held"
    return holder, int(child)


def _kill(holder: subprocess.Popen) -> None:
    holder.kill()
    holder.wait()


def test_a_second_command_refuses_while_one_writes_the_warehouse_and_a_killed_one_holds_nothing(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Two commands at once (no Dagster instance between them) took the file in turns between
    # their steps, and the one under way failed.
    warehouse = _raw_loaded(tiny_zone, tmp_path, monkeypatch)
    loaded = _count(warehouse, "SELECT max(loaded_at) FROM raw.deliveries")
    holder, child = _held(warehouse, "command")
    try:
        for said in _writers_refused(capsys):
            assert (
                f"Another crm-pipeline command is writing the warehouse {warehouse} "
                f"(pid {holder.pid}, since " in said
            )
            assert ": crm-pipeline materialize): wait until it ends" in said
    finally:
        _kill(holder)
        os.kill(child, signal.SIGKILL)
    # A run launched from the UI meanwhile writes nothing between the command's steps (when
    # DuckDB's own lock is free): it waits for the command to end, saying whose, then goes on.
    zone = warehouse.parent / "zone"
    holder, child = _held(warehouse, "between its steps")
    ending = threading.Timer(3, _kill, [holder])
    instance = dg.DagsterInstance.ephemeral()
    try:
        ending.start()
        ran = _load(zone, warehouse, "stores", instance=instance)
    finally:
        ending.cancel()
        _kill(holder)
    assert ran.success
    said = [e.user_message for e in instance.all_logs(ran.run_id) if not e.is_dagster_event]
    assert any(
        f"crm-pipeline command outside the run queue (pid {holder.pid}, since " in m
        and "this step waits for it to end" in m
        for m in said
    ), said
    assert any(m.startswith("The command ended after ") for m in said), said
    # The UI's run list shows it too, as a tag of the run.
    tag = instance.get_run_by_id(ran.run_id).tags[WAITING_TAG]
    assert re.fullmatch(r"ended after \d+ s", tag), tag
    waited = _count(warehouse, "SELECT max(loaded_at) FROM raw.deliveries")
    assert waited > loaded
    # A command holding it command_wait_minutes after its start is taken as stuck: each step
    # fails, having written nothing, naming the command; the first waits out the limit, and
    # the next, sharing it, does not wait again.
    holder, child = _held(warehouse, "between its steps")
    instance = dg.DagsterInstance.ephemeral()
    try:
        ran = _load(zone, warehouse, "stores", instance, command_wait_minutes=0.05, also="products")
        failed = failure_messages(ran)
    finally:
        _kill(holder)
    assert len(failed) == 2
    for message in failed:
        assert f"crm-pipeline command outside the run queue (pid {holder.pid}, since " in message
        assert "more than 0.05 minutes after it started (command_wait_minutes); this step " in (
            message
        )
    said = [e.user_message for e in instance.all_logs(ran.run_id) if not e.is_dagster_event]
    assert sum("this step waits for it to end" in m for m in said) == 1, said
    # A command recording its run in the same instance (`materialize --record`) takes turns
    # with this run in the warehouse pool: the step does not wait for it, which would hold
    # both up, and says why.
    holder, child = _held(warehouse, "between its steps")
    instance = dg.DagsterInstance.ephemeral()
    instance.create_run_for_job(
        defs.resolve_job_def("daily_refresh"),
        status=dg.DagsterRunStatus.STARTED,
        tags={COMMAND_PID_TAG: str(holder.pid)},
    )
    try:
        ran = _load(zone, warehouse, "stores", instance)
        [failed] = failure_messages(ran)
    finally:
        _kill(holder)
    assert "recorded in this run's Dagster instance (pid " in failed
    assert "so this step cannot wait for it, and wrote nothing" in failed
    said = [e.user_message for e in instance.all_logs(ran.run_id) if not e.is_dagster_event]
    assert not any("this step waits for it to end" in m for m in said), said
    assert _count(warehouse, "SELECT max(loaded_at) FROM raw.deliveries") == waited
    loaded = waited
    # Held by another program, every step fails on it, and says why once.
    other, other_child = _held(warehouse, "other")
    try:
        capsys.readouterr()
        assert _exit_code("--select", "group:raw", "--no-publish") == 1
    finally:
        _kill(other)
        os.kill(other_child, signal.SIGKILL)
    failed = [line for line in capsys.readouterr().err.splitlines() if "  FAILED " in line]
    assert len(failed) >= 7
    assert "Conflicting lock is held" in failed[0]
    assert all(line.endswith(" Cause: as above.") for line in failed[1:])
    # Killed, it holds nothing, nor does the process it forked, still alive: the next runs.
    try:
        os.kill(child, 0)
        assert _exit_code("--select", "group:raw", "--no-publish") == 0
    finally:
        os.kill(child, signal.SIGKILL)
    assert _count(warehouse, "SELECT max(loaded_at) FROM raw.deliveries") > loaded


def test_commands_refuse_a_published_path_that_would_replace_the_shop_or_the_warehouse(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    warehouse = _raw_loaded(tiny_zone, tmp_path, monkeypatch)
    shop = warehouse.parent / "zone" / landing.SHOP_DATABASE_FILE
    delivered = shop.read_bytes()
    monkeypatch.setenv("CRM_PUBLISHED", str(shop))
    for said in _writers_refused(capsys):
        assert f"CRM_PUBLISHED makes {shop} the published copy's path, and that is no DuckDB" in (
            said
        )
    assert shop.read_bytes() == delivered
    # A run that does not publish has nothing to refuse.
    assert _exit_code("--select", "group:raw", "--no-publish") == 0
    monkeypatch.delenv("CRM_PUBLISHED")
    with pytest.raises(SystemExit) as exit_code:
        main(["dictionary", "--out", str(warehouse)])
    assert exit_code.value.code == 2
    assert "is the warehouse, its published copy or its key secret" in capsys.readouterr().err
    assert _count(warehouse, "SELECT count(*) FROM raw.deliveries") > 0


def test_a_link_in_place_of_the_lock_file_is_refused_and_its_target_left_alone(
    tiny_zone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # Whoever can write the warehouse's folder could point the lock file at a file of the
    # user who runs the commands, which taking the lock truncated.
    warehouse = _raw_loaded(tiny_zone, tmp_path, monkeypatch)
    victim = tmp_path / "notes.txt"
    victim.write_text("important content\n")
    lock = warehouse.with_name(warehouse.name + ".lock")
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    for said in _writers_refused(capsys):
        assert f"The warehouse's lock file {lock} is a link" in said
        assert "Remove the link, then run the command again." in said
    assert victim.read_text() == "important content\n"
