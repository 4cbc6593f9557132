"""The production configuration on a real PostgreSQL server: a run recorded by an instance from
dagster_production.yaml, and the online shop read from PostgreSQL into raw."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import pytest
import sqlalchemy as sa

from crm_pipeline.definitions import defs
from crm_pipeline.generate import generate
from crm_pipeline.resources import WAREHOUSE_POOL, LandingZoneResource, resources_from_env
from crm_pipeline.run import landing_days, materialize_all
from crm_pipeline_tests.postgres_server import postgres_server

PRODUCTION_CONFIG = Path(__file__).parents[1] / "crm_pipeline" / "dagster_production.yaml"
SHOP_TABLES = {
    "accounts": "online_accounts",
    "orders": "online_orders",
    "order_items": "online_order_items",
}
SHOP_ASSETS = " or ".join(f'key:"raw/{table}"' for table in SHOP_TABLES.values())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL server holding the instance and the shop; the raw shop tables loaded by one
    run of a Dagster instance configured by dagster_production.yaml."""
    folder = tmp_path_factory.mktemp("production")
    with postgres_server(("dagster", "shop")) as urls, pytest.MonkeyPatch.context() as env:
        landing = folder / "landing"
        generate(landing, customers=200, days=14, seed=3, defect_rate=0.05, shop_url=urls["shop"])
        home = folder / "dagster_home"
        home.mkdir()
        shutil.copy(PRODUCTION_CONFIG, home / "dagster.yaml")
        env.setenv("DAGSTER_PG_URL", urls["dagster"])
        env.setenv("CRM_SHOP_URL", urls["shop"])
        env.setenv("CRM_LANDING_DIR", str(landing))
        env.setenv("CRM_WAREHOUSE", str(folder / "warehouse.duckdb"))
        days = landing_days(LandingZoneResource(root=str(landing), shop_url=urls["shop"]))
        run_defs = dg.Definitions(assets=list(defs.assets), resources=resources_from_env())
        # Not entered (`with`): entering an instance sets Dagster's current state storage and
        # leaving it does not reset it (1.13), so later tests' definitions would reach it.
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            result = materialize_all(run_defs, instance, days[0], days[-1], SHOP_ASSETS)
            warehouse = duckdb.connect(str(folder / "warehouse.duckdb"), read_only=True)
            shop, dagster_db = sa.create_engine(urls["shop"]), sa.create_engine(urls["dagster"])
            yield result, instance, warehouse, shop, dagster_db
            warehouse.close()
            shop.dispose()
            dagster_db.dispose()
        finally:
            instance.dispose()


def test_the_run_succeeds_and_its_record_is_in_postgresql(deployment) -> None:
    result, instance, _, _, dagster_db = deployment
    assert result.success
    with dagster_db.connect() as db:
        runs = db.execute(sa.text("SELECT run_id, status FROM runs")).all()
    assert runs == [(result.run_id, "SUCCESS")]
    (record,) = instance.get_run_records()
    assert record.dagster_run.run_id == result.run_id


def test_every_shop_row_in_postgresql_is_in_raw_or_in_quarantine(deployment) -> None:
    _, _, warehouse, shop, _ = deployment
    for table, raw in SHOP_TABLES.items():
        with shop.connect() as db:
            delivered = db.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
        landed = warehouse.execute(f"SELECT count(*) FROM raw.{raw}").fetchone()[0]
        rejected = warehouse.execute(
            "SELECT count(*) FROM quarantine.raw_rejects WHERE source = ?", [raw]
        ).fetchone()[0]
        assert delivered > 0
        assert landed + rejected == delivered, table
    accounts = warehouse.execute("SELECT count(*) FROM raw.online_accounts").fetchone()[0]
    with shop.connect() as db:
        assert accounts == db.execute(sa.text("SELECT count(*) FROM accounts")).scalar()


def test_raw_rows_carry_the_shop_table_and_row_number_they_came_from(deployment) -> None:
    _, _, warehouse, shop, _ = deployment
    for table, raw in SHOP_TABLES.items():
        lineage = warehouse.execute(
            f"""
            SELECT source_file, source_line FROM raw.{raw}
            UNION ALL
            SELECT source_file, source_line FROM quarantine.raw_rejects WHERE source = ?
            """,
            [raw],
        ).fetchall()
        with shop.connect() as db:
            delivered = db.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
        assert {file for file, _ in lineage} == {f"shop:{table}"}
        assert sorted(line for _, line in lineage) == list(range(1, delivered + 1)), table


def test_order_totals_arrive_exactly_as_postgresql_holds_them(deployment) -> None:
    _, _, warehouse, shop, _ = deployment
    with shop.connect() as db:
        delivered = db.execute(sa.text("SELECT order_id, total_amount FROM orders")).all()
    loaded = warehouse.execute(
        """
        SELECT order_id, CAST(total_amount AS DOUBLE) FROM raw.online_orders
        UNION ALL
        SELECT raw_text ->> 'order_id', CAST(raw_text ->> 'total_amount' AS DOUBLE)
        FROM quarantine.raw_rejects
        WHERE source = 'online_orders'
        """
    ).fetchall()
    assert Counter(loaded) == Counter(map(tuple, delivered))


def test_the_instance_queues_runs_one_at_a_time_and_the_warehouse_pool_has_one_slot(
    deployment,
) -> None:
    _, instance, _, _, _ = deployment
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    run_queue = instance.get_concurrency_config().run_queue_config
    assert run_queue.max_concurrent_runs == 1
    assert run_queue.tag_concurrency_limits == []
    assert instance.global_op_concurrency_default_limit == 1
    # The pool's slot was created in PostgreSQL when the run's first writer claimed it.
    assert instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).slot_count == 1


def test_the_deployments_ui_opens_without_the_welcome_dialog(deployment) -> None:
    _, instance, _, _, _ = deployment
    assert not instance.nux_enabled


def test_shop_rows_are_numbered_in_the_order_postgresql_stores_them(deployment) -> None:
    # As SQLite's rowid: of an order exported twice, the copy written last is numbered last.
    _, _, warehouse, shop, _ = deployment
    with shop.connect() as db:
        stored = db.execute(
            sa.text("SELECT row_number() OVER (ORDER BY ctid), order_id, status FROM orders")
        ).fetchall()
    landed = warehouse.execute(
        "SELECT source_line, order_id, status FROM raw.online_orders"
    ).fetchall()
    repeated = [i for i, n in Counter(o for _, o, _ in stored).items() if n > 1]
    assert repeated, "the generated shop should hold re-exported orders"
    assert set(landed) <= {(n, o, s) for n, o, s in stored}
