"""The published warehouse: the copy analysts read. It is swapped in whole, and only by a run
that got this far, so analysts never see half a run and never hold the file a run writes."""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline import replace_file
from crm_pipeline.dictionary import published_columns
from crm_pipeline.failures import explained
from crm_pipeline.raw.tables import quote_ident, quote_literal
from crm_pipeline.resources import PSEUDONYMOUS, WAREHOUSE_POOL, WHOLE, WarehouseResource

KEY = dg.AssetKey(["warehouse", "published"])
_COPY = "published_copy"  # the new copy, attached while it is written


def stored_version(warehouse: WarehouseResource) -> str:
    """The DuckDB storage format the warehouse file is written in, such as v1.5.0."""
    with warehouse.connect(read_only=True) as conn:
        (tag,) = conn.execute(
            "SELECT tags['storage_version'] FROM duckdb_databases() "
            "WHERE database_name = current_database()"
        ).fetchone()
    return str(tag).rstrip("+")


@dataclass(frozen=True)
class Published:
    """What a publish wrote: the copy's content (pseudonymous or whole), each of its tables with
    its rows, and the warehouse's tables it left out."""

    content: str
    tables: list[tuple[str, int]]
    left_out: list[str]


def publish(
    warehouse: WarehouseResource,
    settle: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> Published:
    """Write the published copy beside its path and rename it over it in one step: a reader
    that has the old file open keeps reading the old file (POSIX rename), and new readers get
    the new one.

    By default the copy is pseudonymous (CRM_PUBLISHED_CONTENT): every table but the delivered
    records of raw and staging, each personal column empty, written anew so that no personal
    value is left in the file's bytes either. 'whole' copies the warehouse file as it is.
    settle: a last write to the copy before it is swapped in (a record true of the copy once
    written).
    """
    target = warehouse.publish_target()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    whole = warehouse.publishes_whole()
    if stored_version(warehouse) != warehouse.storage_version:
        # A warehouse made before the setting (or another one) is rewritten in its format
        # once, so the DuckDB CLI installed with it and the clients the setting names open it.
        from crm_pipeline.privacy import rewrite_file

        rewrite_file(warehouse.path, warehouse.large_memory_limit, warehouse.storage_version)
    if whole:
        _copy_whole(warehouse, partial)
        left_out = []
    else:
        left_out = _copy_pseudonymous(warehouse, partial)
    with duckdb.connect(str(partial), read_only=settle is None) as copy:
        if settle is not None:
            settle(copy)
        tables = copy.execute(
            "SELECT schema_name || '.' || table_name, estimated_size FROM duckdb_tables() "
            "ORDER BY 1"
        ).fetchall()
    replace_file(partial, target)
    return Published(WHOLE if whole else PSEUDONYMOUS, tables, left_out)


def _copy_whole(warehouse: WarehouseResource, partial: Path) -> None:
    """The warehouse file as it is (in the storage format the setting names, see publish)."""
    with warehouse.connect() as conn:
        conn.execute("CHECKPOINT")  # everything in the main file, nothing left in the WAL
        # A stopped publish's WAL beside the copy would be replayed into it, and refused.
        partial.with_name(partial.name + ".wal").unlink(missing_ok=True)
        shutil.copyfile(warehouse.path, partial)


def _copy_pseudonymous(warehouse: WarehouseResource, partial: Path) -> list[str]:
    """Write each published table into a new file, personal columns empty (NULL, in their
    types); returns the tables left out."""
    left_out = []
    with warehouse.connect(memory_limit=warehouse.large_memory_limit) as conn:
        tables = conn.execute(
            """
            SELECT schema_name, table_name,
                   list(column_name ORDER BY column_index), list(data_type ORDER BY column_index),
                   list(is_nullable ORDER BY column_index)
            FROM duckdb_columns()
            WHERE table_oid IN (
                SELECT table_oid FROM duckdb_tables() WHERE database_name = current_database()
            )
            GROUP BY ALL
            ORDER BY ALL
            """
        ).fetchall()
        # Left by a publish that was stopped; removed only once this one holds the warehouse.
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + ".wal").unlink(missing_ok=True)
        version = quote_literal(warehouse.storage_version)
        conn.execute(f"ATTACH {quote_literal(str(partial))} AS {_COPY} (STORAGE_VERSION {version})")
        try:
            for schema, name, columns, types, nullable in tables:
                table = f"{quote_ident(schema)}.{quote_ident(name)}"
                form = published_columns(f"{schema}.{name}", columns)
                if form is None:
                    left_out.append(f"{schema}.{name}")
                    continue
                # Each column in its type, NOT NULL where the warehouse's is and it is kept.
                defined = ", ".join(
                    f"{quote_ident(column)} {kind}"
                    + ("" if emptied or can_be_null else " NOT NULL")
                    for (column, emptied), kind, can_be_null in zip(
                        form, types, nullable, strict=True
                    )
                )
                select = ", ".join(
                    "NULL" if emptied else quote_ident(column) for column, emptied in form
                )
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {_COPY}.{quote_ident(schema)}")
                conn.execute(f"CREATE TABLE {_COPY}.{table} ({defined})")
                conn.execute(f"INSERT INTO {_COPY}.{table} SELECT {select} FROM {table}")
        finally:
            conn.execute(f"DETACH {_COPY}")
    return left_out


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
                description="The published copy opens read-only and holds tables.",
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
            done = publish(warehouse)
        context.log.info(f"Published {len(done.tables)} tables ({done.content}) to {path}")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(path)),
                "content": done.content,
                "tables": len(done.tables),
                "left_out": dg.MetadataValue.text(", ".join(done.left_out) or "none"),
                "bytes": Path(path).stat().st_size,
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name="readable",
                    passed=bool(done.tables),
                    description=f"{len(done.tables)} tables readable in the published copy",
                )
            ],
        )

    return published
