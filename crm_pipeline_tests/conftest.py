"""Shared fixtures: a tiny landing zone, a warehouse in a temp folder, resources bound to them."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crm_pipeline import landing
from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline.resources import LandingZoneResource, WarehouseResource
from crm_pipeline_tests import landing_builder


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def _own_dagster_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests read no developer's DAGSTER_HOME (`make ui`'s runs, which commands that write
    the warehouse wait for): an empty one of their own, unless a test sets another."""
    os.environ["DAGSTER_HOME"] = str(tmp_path_factory.mktemp("dagster_home"))


@pytest.fixture(scope="module")
def tiny_zone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return landing_builder.build(tmp_path_factory.mktemp("landing"))


def bind(
    zone: Path, warehouse: Path, rules: CoreRules | None = None
) -> dict[str, dg.ConfigurableResource]:
    return {
        "warehouse": WarehouseResource(path=str(warehouse)),
        "landing_zone": LandingZoneResource(root=str(zone), shop_url=landing.shop_url_for(zone)),
        "core_rules": rules or CoreRules(),
        "analysis": AnalysisSettings(),
        "mining": MiningSettings(),
    }


def tables_quoting(path: Path, values: list[str]) -> list[str]:
    """Every table and text column of the DuckDB file at `path` holding one of the values."""
    with duckdb.connect(str(path), read_only=True) as conn:
        columns = conn.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
            "WHERE data_type IN ('VARCHAR', 'JSON') AND NOT internal"
        ).fetchall()
        return [
            f"{schema}.{table}.{column}"
            for schema, table, column in columns
            if conn.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" '
                f'WHERE list_bool_or([contains(CAST("{column}" AS VARCHAR), v) FOR v IN $v])',
                {"v": values},
            ).fetchall()[0][0]
        ]
