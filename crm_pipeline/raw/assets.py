"""Raw layer assets: one per source table, landing every delivered row in schema raw.

Event sources are daily-partitioned; a run over a range of days is one run, and re-running a day
replaces it. Snapshot sources (accounts, reference files) are replaced whole on each load.
"""

import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb

from crm_pipeline import landing
from crm_pipeline.failures import ActionableError, explained, listed, safe_url
from crm_pipeline.partitions import daily_partitions, single_run_backfill
from crm_pipeline.privacy import blank_raw
from crm_pipeline.raw import checks
from crm_pipeline.raw.files import Delivery, deliveries, load_csv, load_jsonl
from crm_pipeline.raw.schemas import RAW_MODELS
from crm_pipeline.raw.shop import ShopRead, load_shop_table
from crm_pipeline.raw.tables import (
    REJECTS_TABLE,
    clear_slice,
    ensure_raw_tables,
    raw_column_types,
)
from crm_pipeline.reporting import schema_of, table_metadata
from crm_pipeline.resources import WAREHOUSE_POOL, LandingZoneResource, WarehouseResource

Loader = Callable[[duckdb.DuckDBPyConnection, str, tuple[str, ...], list[Delivery], datetime], None]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _days(context: dg.AssetExecutionContext) -> list[str]:
    """The run's partition days. A range that holds none (its first day after its last)
    fails before anything is cleared: read as no bounds, it would replace the whole table."""
    keys = context.partition_key_range
    days = daily_partitions.get_partition_keys_in_range(keys)
    if not days:
        raise ActionableError(
            f"The run's range of days {keys.start}..{keys.end} holds no day (its first day is "
            "after its last): launch it again with the first day on or before the last."
        )
    return days


def _slice(days: list[str] | None) -> tuple[str, list]:
    if days is None:
        return "TRUE", []
    return "(partition_date BETWEEN ? AND ? OR partition_date IS NULL)", [days[0], days[-1]]


def _result(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    days: list[str] | None,
    notes: dict[str, list[str]] | None = None,
    empty_files: list[str] | None = None,
    also: list[dg.AssetCheckResult] | None = None,
    gone: dict[str, int] | None = None,
) -> dg.MaterializeResult:
    """Checks and metadata for the slice just written (a whole table or a range of days);
    empty_files: delivered files without a byte of content; also: the asset's other checks;
    gone: files an earlier load of the slice loaded that are no longer delivered, with the
    rows they had in raw."""
    model = RAW_MODELS[table]
    where, params = _slice(days)
    rejected = conn.execute(
        "SELECT reason, count(*) FROM quarantine.raw_rejects WHERE source = ? AND "
        + where
        + " GROUP BY ALL ORDER BY 2 DESC",
        [table, *params],
    ).fetchall()
    metadata = table_metadata(conn, f"raw.{table}", model, where, params, schema=False, days=days)
    metadata["rejected_rows"] = sum(n for _, n in rejected)
    metadata["rejected_by_reason"] = dg.MetadataValue.json(dict(rejected))
    for key, values in (notes or {}).items():
        metadata[key] = dg.MetadataValue.json(values)
    if days is not None:
        metadata["partitions"] = dg.MetadataValue.text(f"{days[0]}..{days[-1]} ({len(days)} days)")
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            checks.contract_result(conn, table, model, where, params),
            checks.rows_accounted_result(conn, table, where, params, empty_files or [], gone or {}),
            *(also or []),
        ],
    )


# The shop database can be briefly unreachable (a restart, a failover): retry with backoff
# before failing the run. A loaded slice is replaced in one transaction, so a retry is safe.
SOURCE_RETRY = dg.RetryPolicy(max_retries=3, delay=15, backoff=dg.Backoff.EXPONENTIAL)


def _asset(
    table: str,
    columns: tuple[str, ...],
    partitioned: bool,
    kinds: set[str],
    retry_policy: dg.RetryPolicy | None = None,
) -> Callable[[Callable], dg.AssetsDefinition]:
    key = dg.AssetKey(["raw", table])
    model = RAW_MODELS[table]
    # backfill_policy is marked beta, but single-run backfills are what the design asks for.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.asset(
            key=key,
            group_name="raw",
            description=model.__doc__,
            partitions_def=daily_partitions if partitioned else None,
            backfill_policy=single_run_backfill if partitioned else None,
            pool=WAREHOUSE_POOL,
            kinds={"duckdb", *kinds},
            check_specs=checks.check_specs(key, shop_days=partitioned and "sql" in kinds),
            tags={"layer": "raw"},
            # The schema shows in the UI before the first materialization, too.
            metadata={"dagster/column_schema": schema_of(model, raw_column_types(columns))},
            retry_policy=retry_policy,
        )


def _load_files(
    context: dg.AssetExecutionContext,
    source: landing.FileSource,
    loader: Loader,
    warehouse: WarehouseResource,
    root: Path,
    days: list[str] | None,
) -> dg.MaterializeResult:
    """Replace the slice of raw.<source> for `days` (or the whole table) with its files."""
    # Files are listed and read once no command writes the warehouse: what they held then.
    warehouse.wait_for_command()
    paths = [
        (path, path.relative_to(root).as_posix(), day)
        for day in (days or [None])
        for path in source.files(root, day)
    ]
    refused = [
        p.relative_to(root).as_posix()
        for day in (days or [None])
        for p in source.refused(root, day)
    ]
    if not paths and not source.daily:
        links = f" ({listed(refused)}: a link or special file, never read)" if refused else ""
        raise ActionableError(
            f"No {source.pattern} under {root / source.folder}{links}: deliver the reference "
            f"file (a regular file) or point CRM_LANDING_DIR at the landing zone (now {root})."
        )
    if source.daily and not (root / source.folder).is_dir():
        # Loaded as no rows, a source whose folder is missing would vanish from every table.
        raise ActionableError(
            f"No {source.folder}/ folder under {root}: deliver its daily folders there, point "
            "CRM_LANDING_DIR at the landing zone, or, if this source has nothing to deliver, "
            f"create it with an empty folder for each day ({source.folder}/<YYYY-MM-DD>/)."
        )
    absent = [day for day in days or [] if not (root / source.folder / day).is_dir()]
    if absent:
        # Loaded as no rows, a day not delivered yet (or taken away) would replace the day's
        # rows with none, and the run would publish it.
        raise ActionableError(
            f"No {source.folder}/{absent[0]}/ folder under {root} (days without one: "
            f"{listed(absent, 5)}): "
            f"the day is not delivered. Deliver it (an empty folder if {source.name} had "
            f"nothing that day), then re-materialize it; raw.{source.name} is left as it was."
        )
    context.log.info(f"raw.{source.name}: {len(paths)} file(s) from {root}")
    if refused:
        context.log.warning(
            f"raw.{source.name}: {len(refused)} symbolic link(s) or special file(s) not read "
            "(a link could reach any file this user may read; copy the file in instead): "
            + listed(refused)
        )
    stray = source.stray_files(root, set(daily_partitions.get_partition_keys()))
    if stray:
        context.log.warning(
            f"raw.{source.name}: {len(stray)} file(s) not read, outside the "
            f"{source.folder}/<YYYY-MM-DD>/{source.pattern} layout, or dated before "
            f"{daily_partitions.start:%Y-%m-%d} (CRM_FIRST_DAY) or after yesterday (rename or "
            "move one into its day's folder to load it): "
            + ", ".join(p.relative_to(root).as_posix() for p in stray[:10])
        )
    loaded_at = _now()
    delivered = deliveries(paths)
    # A CSV export writes its header even for a day without rows: a file of no bytes is what
    # a failed export leaves. A first delivery of a day loads as no rows, with a warning; a
    # reference file, or one in place of a file that loaded, is refused (below). (A JSON
    # Lines file of a day without rows is empty by right.)
    empty = [d.name for d in delivered if loader is load_csv and d.blank]
    if empty:
        context.log.warning(
            f"raw.{source.name}: {len(empty)} file(s) empty, not even a header line: "
            + listed(empty)
        )
    with warehouse.connect() as conn:
        ensure_raw_tables(conn, source.name, source.columns)
        conn.begin()
        where, params = _slice(days)
        held = dict(
            conn.execute(
                f"SELECT source_file, count(*) FROM raw.{source.name} WHERE {where} GROUP BY 1",
                params,
            ).fetchall()
        )
        clear_slice(conn, source.name, *((days[0], days[-1]) if days is not None else (None, None)))
        loader(conn, source.name, source.columns, delivered, loaded_at)
        blank_raw(conn, source.name)
        _refuse_a_load_that_empties(
            conn, source, held, loaded_at, empty, [d.name for d in delivered]
        )
        conn.commit()
        not_read = refused[:50] + [p.relative_to(root).as_posix() for p in stray[:50]]
        names = {d.name for d in delivered}
        gone = {name: rows for name, rows in sorted(held.items()) if name not in names}
        return _result(conn, source.name, days, {"files_not_read": not_read}, empty, gone=gone)


def _refuse_a_load_that_empties(
    conn: duckdb.DuckDBPyConnection,
    source: landing.FileSource,
    held: dict[str, int],
    loaded_at: datetime,
    empty: list[str],
    files: list[str],
) -> None:
    """Fail the load, leaving the table as it was, when a file has rows none of which could
    be read (a changed delimiter, a renamed header) and it would empty what it feeds: a
    reference file (every order line would lose its store or product, and the run go on
    with a channel missing), or a daily file delivered again in place of one that loaded
    (`held`: rows per file before; the run would publish the day without that source), as
    also when that file now holds no record at all (a header only, an empty JSON Lines
    file). A first delivery of a daily file that cannot be read is set aside whole, as any
    reject. A file with a header only loads as no rows (an online-only business has no
    stores; a day without sales)."""
    rows = conn.execute(
        f"""
        WITH rejected AS (
            -- The detail when it is the file's own (a header lacking a column), not a line's.
            SELECT source_file, reason, count(*) AS n,
                   CASE WHEN count(DISTINCT detail) = 1 THEN ' (' || any_value(detail) || ')'
                   END AS detail
            FROM {REJECTS_TABLE}
            WHERE source = $source AND loaded_at = $at
            GROUP BY source_file, reason
        ), landed AS (
            SELECT source_file, count(*) AS n FROM raw.{source.name} WHERE loaded_at = $at
            GROUP BY ALL
        )
        SELECT r.source_file,
               string_agg(
                   r.n || ' row(s): ' || r.reason || coalesce(r.detail, ''), '; ' ORDER BY r.n DESC
               )
        FROM rejected AS r
        WHERE r.source_file NOT IN (SELECT source_file FROM landed)
        GROUP BY ALL
        ORDER BY 1
        """,
        {"source": source.name, "at": loaded_at},
    ).fetchall()
    # A file of no bytes has no row to reject: it empties what it feeds all the same.
    rows += [(file, "the file is empty, not even a header line") for file in empty]
    if source.daily:
        # Nor has a file that now holds no record, in place of one whose rows loaded.
        landed = {
            file
            for (file,) in conn.execute(
                f"SELECT DISTINCT source_file FROM raw.{source.name} WHERE loaded_at = ?",
                [loaded_at],
            ).fetchall()
        }
        named = {file for file, _ in rows}
        rows += [
            (file, "it now holds no record")
            for file in files
            if held.get(file) and file not in landed and file not in named
        ]
    for file, why in rows:
        if source.daily and not held.get(file):
            continue
        conn.rollback()
        before = f", and raw.{source.name} held {held[file]} rows from it" if source.daily else ""
        instead = (
            ", or, if the day truly has none from it, remove the file and re-materialize the day"
            if source.daily
            else ""
        )
        raise ActionableError(
            f"No row of {file} could be loaded ({why}){before}. Fix the file and deliver it "
            f"again{instead}; raw.{source.name} is left as it was until then."
        )


def file_asset(source: landing.FileSource, loader: Loader) -> dg.AssetsDefinition:
    """The raw asset of a file source (daily exports or a reference file)."""
    kind = "csv" if loader is load_csv else "json"

    @_asset(source.name, source.columns, source.daily, {kind})
    def _raw(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        landing_zone: LandingZoneResource,
    ) -> dg.MaterializeResult:
        root = landing_zone.path
        folder = root / source.folder
        advice = (
            f"Check that {folder} and its files are readable (permissions, a folder in a "
            "file's place), fix or remove the file the cause names, then re-materialize "
            f"raw.{source.name}" + (" for these partitions." if source.daily else ".")
        )
        with explained(context, f"{source.pattern} files under {folder}", advice):
            days = _days(context) if source.daily else None
            return _load_files(context, source, loader, warehouse, root, days)

    return _raw


def shop_asset(table: landing.ShopTable, partitioned: bool) -> dg.AssetsDefinition:
    """The raw asset of one online shop table, read through SQLAlchemy."""
    name = f"online_{table.name}"
    read = ShopRead(table.name, table.columns, partitioned)

    @_asset(name, table.columns, partitioned, {"sql"}, retry_policy=SOURCE_RETRY)
    def _raw(
        context: dg.AssetExecutionContext,
        warehouse: WarehouseResource,
        landing_zone: LandingZoneResource,
    ) -> dg.MaterializeResult:
        url = landing_zone.database_url
        reading = f"the online shop database {safe_url(url)}, table '{table.name}'"
        advice = (
            "Check that the shop database is reachable and CRM_SHOP_URL points at it, then "
            f"re-materialize raw.{name}" + (" for these partitions." if partitioned else ".")
        )
        with explained(context, reading, advice, url):
            warehouse.wait_for_command()
        loaded_at = _now()
        with explained(context, reading, advice, url), warehouse.connect() as conn:
            days = _days(context) if partitioned else None
            ensure_raw_tables(conn, name, table.columns)
            conn.begin()
            clear_slice(conn, name, *((days[0], days[-1]) if days is not None else (None, None)))
            changed = load_shop_table(
                conn,
                url,
                read,
                days=days,
                valid_days=daily_partitions.get_partition_keys(),
                loaded_at=loaded_at,
            )
            blank_raw(conn, name)
            conn.commit()
            also = [checks.shop_days_result(name, changed)] if partitioned else []
            return _result(conn, name, days, also=also)

    return _raw


raw_assets = [
    shop_asset(landing.ACCOUNTS, partitioned=False),
    shop_asset(landing.ORDERS, partitioned=True),
    shop_asset(landing.ORDER_ITEMS, partitioned=True),
    file_asset(landing.STORE_PURCHASES, load_csv),
    file_asset(landing.INQUIRIES, load_jsonl),
    file_asset(landing.FEEDBACK, load_csv),
    *(file_asset(source, load_csv) for source in landing.REFERENCE_FILES),
]
