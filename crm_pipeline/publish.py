"""The published warehouse: the copy analysts read. It is swapped in whole, and only by a run
that got this far, so analysts never see half a run and never hold the file a run writes."""

import shutil
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline import replace_file
from crm_pipeline.failures import explained
from crm_pipeline.resources import WAREHOUSE_POOL, WarehouseResource

KEY = dg.AssetKey(["warehouse", "published"])


def stored_version(warehouse: WarehouseResource) -> str:
    """The DuckDB storage format the warehouse file is written in, such as v1.5.0."""
    with warehouse.connect(read_only=True) as conn:
        (tag,) = conn.execute(
            "SELECT tags['storage_version'] FROM duckdb_databases() "
            "WHERE database_name = current_database()"
        ).fetchone()
    return str(tag).rstrip("+")


def publish(warehouse: WarehouseResource) -> list[tuple[str, int]]:
    """Copy the warehouse to its published path in one rename; returns the published tables
    and their row counts.

    The copy is written beside the target and renamed over it: a reader that has the old file
    open keeps reading the old file (POSIX rename), and new readers get the new one.
    """
    target = warehouse.published_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    if stored_version(warehouse) != warehouse.storage_version:
        # A warehouse made before the setting (or another one) is rewritten in its format
        # once, so the copy opens in the clients the setting names.
        from crm_pipeline.privacy import rewrite_file

        rewrite_file(warehouse.path, warehouse.large_memory_limit, warehouse.storage_version)
    with warehouse.connect() as conn:
        conn.execute("CHECKPOINT")  # everything in the main file, nothing left in the WAL
        shutil.copyfile(warehouse.path, partial)
    with duckdb.connect(str(partial), read_only=True) as copy:
        tables = copy.execute(
            "SELECT schema_name || '.' || table_name, estimated_size FROM duckdb_tables() "
            "ORDER BY 1"
        ).fetchall()
    replace_file(partial, target)
    return tables


def published_asset(deps: list[dg.AssetKey]) -> dg.AssetsDefinition:
    """The publishing step of a run, after every asset in `deps`: when one of them fails, or a
    blocking check on it fails, Dagster skips this step and the published copy stays as it was."""

    @dg.asset(
        key=KEY,
        group_name="warehouse",
        description="The read-only copy of the warehouse analysts query (published.duckdb "
        "beside it by default), replaced in one rename after a run whose assets and blocking "
        "checks passed.",
        deps=deps,
        pool=WAREHOUSE_POOL,
        kinds={"duckdb"},
        tags={"layer": "warehouse"},
        check_specs=[
            dg.AssetCheckSpec(
                "readable",
                asset=KEY,
                description="The published copy opens read-only and holds every table.",
            )
        ],
    )
    def published(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        path = warehouse.published_path().resolve()
        advice = (
            f"Check the free space and permissions of {path.parent}, then "
            f"re-materialize {KEY.to_user_string()}."
        )
        reading = f"the warehouse {warehouse.path}, to publish it to {path}"
        with explained(context, reading, advice):
            tables = publish(warehouse)
        context.log.info(f"Published {len(tables)} tables to {path}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "tables": len(tables),
                "bytes": Path(path).stat().st_size,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="readable",
                    passed=bool(tables),
                    description=f"{len(tables)} tables readable in the published copy",
                )
            ],
        )

    return published
