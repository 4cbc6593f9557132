"""Customer-level marts (schemas analytics and mining): tables computed as of one day.

A builder writes its table from the core model as of the day; mart_asset() wraps it in an
asset that checks the table against its pandera contract and its grain (blocking) and reports
row count, column schema and preview.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import NamedTuple

import dagster as dg
import duckdb
import pandera.pandas as pa

from crm_pipeline.analytics.settings import AnalysisSettings
from crm_pipeline.contracts import beside, contract_check, repeated_keys, validate_query
from crm_pipeline.core.classify import CoreRules
from crm_pipeline.core.schemas import column_types, sql_type
from crm_pipeline.failures import explained
from crm_pipeline.mining.settings import MiningSettings
from crm_pipeline.raw.tables import quote_ident
from crm_pipeline.reporting import schema_of, table_metadata
from crm_pipeline.resources import WAREHOUSE_POOL, WarehouseResource


def write_frame(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    frame: str,
    model: type[pa.DataFrameModel],
    order_by: str | None = None,
) -> None:
    """Replace `table` with a registered frame, each column in its contract's type whatever the
    frame's: a column all NULL, or of whole numbers only, is stored as the contract says, not
    as pandas guessed (a NULL type, DOUBLE for a code), so BI tools find the same types every
    day."""
    columns = ", ".join(
        f"CAST({quote_ident(name)} AS {sql_type(dtype)}) AS {quote_ident(name)}"
        for name, dtype in column_types(model)
    )
    order = f" ORDER BY {order_by}" if order_by else ""
    conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT {columns} FROM {frame}{order}")


@dataclass(frozen=True)
class Settings:
    """Every setting a builder may need, from the bound resources."""

    analysis: AnalysisSettings
    rules: CoreRules
    mining: MiningSettings


@dataclass(frozen=True)
class Built:
    """What a builder tells the operator beyond the standard metadata."""

    metadata: dict
    message: str


Builder = Callable[[duckdb.DuckDBPyConnection, date, Settings], Built]


class Mart(NamedTuple):
    """A mart table: its name, grain, upstream assets and builder. large_memory: its step
    gets the warehouse's large_memory_limit (group-bys over every order line that would
    spill to disk at the default)."""

    name: str
    grain: list[str]
    deps: list[dg.AssetKey]
    build: Builder
    large_memory: bool = False


# Customer-level tables are rebuilt by the daily run: stale after a missed day, failed after
# a day and a quarter.
DAILY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=30), warn_window=timedelta(hours=26)
)


ORDER_LINES = dg.AssetKey(["core", "order_lines"])


def as_of_day(conn: duckdb.DuckDBPyConnection, analysis: AnalysisSettings) -> date:
    """The configured day, or the last day with orders (today when there are none)."""
    return (
        analysis.as_of_date()
        or conn.execute(
            "SELECT coalesce(CAST(max(ordered_at) AS DATE), current_date) FROM core.order_lines"
        ).fetchall()[0][0]
    )


def mart_asset(
    schema: str,
    name: str,
    contract: type[pa.DataFrameModel],
    grain: list[str],
    deps: list[dg.AssetKey],
    build: Builder,
    large_memory: bool = False,
) -> dg.AssetsDefinition:
    """An asset for <schema>.<name>: `build` writes the table as of the day; the asset then
    checks it against its contract and its grain, and reports it."""
    key = dg.AssetKey([schema, name])
    # Every mart is as of the last day of the order lines (as_of_day), whatever else it reads.
    deps = [*deps, *([] if ORDER_LINES in deps else [ORDER_LINES])]

    @dg.asset(
        key=key,
        group_name=schema,
        description=contract.__doc__,
        deps=deps,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "python"},
        tags={"layer": schema},
        metadata={"dagster/column_schema": schema_of(contract, column_types(contract))},
        freshness_policy=DAILY_FRESHNESS,
        check_specs=[
            dg.AssetCheckSpec(
                "contract",
                asset=key,
                blocking=True,
                description=f"The pandera contract, and one row per {', '.join(grain)}.",
            )
        ],
    )
    def _mart(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        analysis: AnalysisSettings,
        core_rules: CoreRules,
        mining: MiningSettings,
    ) -> dg.MaterializeResult:
        table = f"{schema}.{name}"
        reading = ", ".join(".".join(d.path) for d in deps)
        advice = f"Fix the cause, then re-materialize {table} and what follows it."
        memory = warehouse.large_memory_limit if large_memory else None
        with explained(context, reading, advice), warehouse.connect(memory_limit=memory) as conn:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            day = as_of_day(conn, analysis)
            built = build(conn, day, Settings(analysis, core_rules, mining))
            with beside(conn, lambda other: repeated_keys(other, table, grain)) as counted:
                outcome = validate_query(conn, f"SELECT * FROM {table}", [], contract, keys=grain)
            repeats = counted.result()
            metadata = table_metadata(conn, table, contract)
        metadata["as_of"] = dg.MetadataValue.text(day.isoformat())
        context.log.info(f"{table}: {built.message} as of {day}")
        return dg.MaterializeResult(
            metadata=metadata | built.metadata,
            check_results=[contract_check("contract", table, outcome, repeats)],
        )

    return _mart


def mart_assets(
    schema: str,
    contracts: dict[str, type[pa.DataFrameModel]],
    specs: list[Mart],
) -> list[dg.AssetsDefinition]:
    """One mart asset per spec, its contract from `contracts`."""
    return [
        mart_asset(schema, s.name, contracts[s.name], s.grain, s.deps, s.build, s.large_memory)
        for s in specs
    ]
