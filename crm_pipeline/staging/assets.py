"""Staging assets: one per raw table, typed, normalised and de-duplicated, in schema staging.

Rows that break a rule go to quarantine.staging_rejects, duplicates to
quarantine.merged_duplicates; both are queryable and counted in each materialization.
"""

import time
import warnings
from datetime import UTC, datetime

import dagster as dg

from crm_pipeline import landing
from crm_pipeline.failures import explained
from crm_pipeline.partitions import daily_partitions, single_run_backfill
from crm_pipeline.reporting import schema_of, table_metadata
from crm_pipeline.resources import WAREHOUSE_POOL, WarehouseResource
from crm_pipeline.run import RANGE_END, RANGE_START
from crm_pipeline.staging import checks
from crm_pipeline.staging.build import (
    MERGED_TABLE,
    REJECTS_TABLE,
    clear,
    ensure_tables,
    slice_sql,
    stage,
    staging_columns,
)
from crm_pipeline.staging.rules import SOURCES, Source
from crm_pipeline.staging.schemas import STAGING_MODELS
from crm_pipeline.staging.staged_with import record_settings, refuse_other_settings

RAW_COLUMNS = {
    **{
        f"online_{t.name}": t.columns
        for t in (landing.ACCOUNTS, landing.ORDERS, landing.ORDER_ITEMS)
    },
    **{s.name: s.columns for s in (landing.STORE_PURCHASES, landing.INQUIRIES, landing.FEEDBACK)},
    **{s.name: s.columns for s in landing.REFERENCE_FILES},
}


def _counts(conn, table: str, source: str, where: str, params: list) -> dict[str, int]:
    return dict(
        conn.execute(
            f"SELECT rule, count(*) FROM {table} WHERE source = ? AND {where} GROUP BY ALL ORDER BY 2 DESC",
            [source, *params],
        ).fetchall()
    )


def _run(
    context: dg.AssetExecutionContext, days: list[str] | None
) -> tuple[list[str] | None, list[str]]:
    """The run's days (those of the asset's partitions, or for a snapshot the days the run
    covers, if any) and the staging tables it stages."""
    if days is None:
        tags = context.run.tags
        if RANGE_START in tags:
            days = daily_partitions.get_partition_keys_in_range(
                dg.PartitionKeyRange(tags[RANGE_START], tags[RANGE_END])
            )
        elif "dagster/partition" in tags:
            days = [tags["dagster/partition"]]
    staged = [
        key.path[1]
        for key in context.job_def.asset_layer.selected_asset_keys
        if key.path[0] == "staging"
    ]
    return days, staged


def staging_asset(source: Source) -> dg.AssetsDefinition:
    key = dg.AssetKey(["staging", source.name])
    model = STAGING_MODELS[source.name]
    deps = [dg.AssetKey(["raw", source.name])]
    deps += [dg.AssetKey(["staging", table]) for table in source.lookups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        decorator = dg.asset(
            key=key,
            group_name="staging",
            description=model.__doc__,
            deps=deps,
            partitions_def=daily_partitions if source.daily else None,
            backfill_policy=single_run_backfill if source.daily else None,
            pool=WAREHOUSE_POOL,
            kinds={"duckdb"},
            check_specs=checks.check_specs(key, source.daily),
            tags={"layer": "staging"},
            metadata={
                "dagster/column_schema": schema_of(model, list(staging_columns(source).items()))
            },
        )

    @decorator
    def _staging(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        days = (
            daily_partitions.get_partition_keys_in_range(context.partition_key_range)
            if source.daily
            else None
        )
        # The load time is taken once no command writes the warehouse: a fit made meanwhile
        # is older than the days this stages (analytics.assets.serving_run).
        warehouse.wait_for_command()
        loaded_at = datetime.now(UTC).replace(tzinfo=None)
        started = time.perf_counter()
        reading = f"raw.{source.name}" + "".join(f", staging.{t}" for t in source.lookups)
        advice = (
            f"Fix the cause, or the rows of raw.{source.name} it names, then re-materialize "
            f"staging.{source.name}" + (" for these partitions." if source.daily else ".")
        )
        with explained(context, reading, advice), warehouse.connect() as conn:
            regions = warehouse.phone_region_codes()
            ensure_tables(conn, source)
            refuse_other_settings(conn, source.name, _run(context, days), ",".join(regions))
            conn.begin()
            clear(conn, source, days)
            stage(conn, source, RAW_COLUMNS[source.name], days, loaded_at, regions)
            record_settings(conn, source.name, days, ",".join(regions), loaded_at)
            conn.commit()
            where, params = slice_sql(days)
            metadata = table_metadata(
                conn, f"staging.{source.name}", model, where, params, schema=False, days=days
            )
            staged = metadata.get("rows_in_run", metadata.get("dagster/row_count"))
            context.log.info(
                f"staging.{source.name}: {staged} rows staged in "
                f"{time.perf_counter() - started:.1f} s"
            )
            quarantined = _counts(conn, REJECTS_TABLE, source.name, where, params)
            merged = _counts(conn, MERGED_TABLE, source.name, where, params)
            metadata["quarantined_rows"] = sum(quarantined.values())
            metadata["quarantined_by_rule"] = dg.MetadataValue.json(quarantined)
            metadata["merged_duplicates"] = sum(merged.values())
            metadata["merged_by_rule"] = dg.MetadataValue.json(merged)
            if days:
                metadata["partitions"] = dg.MetadataValue.text(
                    f"{days[0]}..{days[-1]} ({len(days)} days)"
                )
            return dg.MaterializeResult(
                metadata=metadata,
                check_results=[
                    checks.contract_result(conn, source, days),
                    checks.conserved_result(conn, source.name, days),
                    *([checks.version_result(conn, source.name)] if source.daily else []),
                ],
            )

    return _staging


staging_assets = [staging_asset(source) for source in SOURCES.values()]
