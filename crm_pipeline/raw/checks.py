"""The raw layer's checks: each table satisfies its contract, and every delivered row is accounted for."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
import duckdb
import pandera.pandas as pa

from crm_pipeline.contracts import (
    SHOWN_EXAMPLES,
    beside,
    contract_check,
    failing_rows_markdown,
    repeated_keys,
    validate_queries,
)
from crm_pipeline.failures import listed
from crm_pipeline.raw.delivery import WHOLE_FILE_RULES
from crm_pipeline.raw.schemas import RawDeliveries, RawRejects
from crm_pipeline.raw.tables import DELIVERIES_TABLE, REJECTS_TABLE, accounted_sql

CONTRACT = "contract"
ROWS_ACCOUNTED = "rows_accounted"
# Where a raw row came from: enough to find it in the landing zone or the shop database.
LINEAGE = ("source_file", "source_line")


SHOP_DAYS_CURRENT = "shop_days_current"


def check_specs(key: dg.AssetKey, shop_days: bool = False) -> list[dg.AssetCheckSpec]:
    """The two checks every raw asset reports with each materialization; with shop_days, the
    check of a daily shop table's other days too."""
    current = dg.AssetCheckSpec(
        SHOP_DAYS_CURRENT,
        asset=key,
        description=(
            "The shop's rows of the days a run did not load are still those raw holds (compared "
            "by count and hash): warns with the days whose rows the shop changed, added or "
            "removed since (a refund), to be run again."
        ),
    )
    return [
        *([current] if shop_days else []),
        dg.AssetCheckSpec(
            CONTRACT,
            asset=key,
            blocking=True,
            description="Every row of the load satisfies the pandera contract of the raw table.",
        ),
        dg.AssetCheckSpec(
            ROWS_ACCOUNTED,
            asset=key,
            blocking=True,
            description=(
                "Per file (and partition, for daily sources): rows delivered = rows in raw + "
                "rows in quarantine.raw_rejects. Fails on a lost row; warns with the count when "
                "rows were set aside, naming files set aside whole or delivered empty."
            ),
        ),
    ]


def contract_result(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    model: type[pa.DataFrameModel],
    where: str,
    params: list,
) -> dg.AssetCheckResult:
    """Validate the rows just loaded (streamed), the rejects and delivery log they came with,
    and the one cross-row rule raw has."""
    # A delivered record has one place in its file: a repeat means a file was loaded twice.
    with beside(
        conn, lambda other: repeated_keys(other, f"raw.{table}", LINEAGE, where, params)
    ) as repeats:
        logged = f"source = ? AND ({where})"
        outcome = validate_queries(
            conn,
            [
                (f"SELECT * FROM raw.{table} WHERE {where}", params, model, LINEAGE),
                (
                    f"SELECT * FROM {REJECTS_TABLE} WHERE {logged}",
                    [table, *params],
                    RawRejects,
                    LINEAGE,
                ),
                (
                    f"SELECT * FROM {DELIVERIES_TABLE} WHERE {logged}",
                    [table, *params],
                    RawDeliveries,
                    ("source_file", "partition_date"),
                ),
            ],
        )
    return contract_check(
        CONTRACT,
        f"raw.{table}",
        outcome,
        repeats.result(),
        "Remove the file's second copy from the landing zone and re-run its day.",
    )


def rows_accounted_result(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    where: str,
    params: list,
    empty_files: Sequence[str] = (),
    gone: dict[str, int] | None = None,
) -> dg.AssetCheckResult:
    """Compare delivered rows with raw rows plus rejected rows, partition by partition.

    A file delivers non-empty physical lines; a record whose quoted value breaks lines
    accounts for every line it spans (source_lines, and the same count over a reject's text).
    empty_files: files delivered without a byte of content (not even a header), which a
    failed export leaves: the check warns and names them. gone: files loaded before that are
    no longer delivered (their rows left raw with them): warned of too, with their rows.
    """
    rows = conn.execute(
        f"""
        WITH delivered AS (
            SELECT partition_date, source_file, sum(source_rows) AS n
            FROM {DELIVERIES_TABLE}
            WHERE source = ? AND ({where})
            GROUP BY ALL
        ), {accounted_sql(table, where)}
        SELECT coalesce(d.partition_date, l.partition_date, r.partition_date) AS partition_date,
               coalesce(d.source_file, l.source_file, r.source_file) AS source_file,
               coalesce(d.n, 0) AS delivered,
               coalesce(l.n, 0) AS landed,
               coalesce(r.n, 0) AS rejected
        FROM delivered AS d
        FULL JOIN landed AS l
          ON d.partition_date IS NOT DISTINCT FROM l.partition_date
         AND d.source_file = l.source_file
        FULL JOIN rejected AS r
          ON coalesce(d.partition_date, l.partition_date) IS NOT DISTINCT FROM r.partition_date
         AND coalesce(d.source_file, l.source_file) = r.source_file
        ORDER BY 1, 2
        """,
        [table, *params, *params, table, *params],
    ).fetchall()
    # Per file, so a loss names the file to look at.
    lost = [(str(p) if p else "no partition", f, d, l, r) for p, f, d, l, r in rows if d != l + r]
    delivered = sum(r[2] for r in rows)
    rejected = sum(r[4] for r in rows)
    metadata = {
        "delivered_rows": delivered,
        "raw_rows": sum(r[3] for r in rows),
        "rejected_rows": rejected,
    }
    if lost:
        worst = "; ".join(
            f"{p} {f}: delivered {d}, raw {l}, rejected {r} ({d - l - r:+d})"
            for p, f, d, l, r in lost[:10]
        )
        metadata["failing_rows"] = dg.MetadataValue.md(
            failing_rows_markdown(
                [
                    dict(zip(("partition", "source_file", "delivered", "raw", "rejected"), x))
                    for x in lost[:SHOWN_EXAMPLES]
                ]
            )
        )
        return dg.AssetCheckResult(
            check_name=ROWS_ACCOUNTED,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"Rows unaccounted for in {len(lost)} file(s) of raw.{table}: {worst}",
            metadata=metadata,
        )
    warnings = []
    whole = [
        f
        for (f,) in conn.execute(
            f"SELECT DISTINCT source_file FROM {REJECTS_TABLE} "
            f"WHERE source = ? AND list_contains(?, reason) AND ({where}) ORDER BY 1",
            [table, list(WHOLE_FILE_RULES), *params],
        ).fetchall()
    ]
    if whole:
        # Said first: a day without one of its files is not a few bad lines.
        metadata["files_set_aside_whole"] = dg.MetadataValue.json(whole)
        warnings.append(
            f"{len(whole)} file(s) set aside whole for their header, encoding or line breaks "
            f"(each line in {REJECTS_TABLE}, none in raw.{table}): " + listed(whole)
        )
    if rejected:
        # Rows of no partition (an order dated years ahead) are swept anew by every load of
        # the source: said apart, so a day's own rejects do not hide among them.
        # (A load of a whole table, no range given, has no partitions to speak of.)
        unplaced = sum(r[4] for r in rows if r[0] is None) if params else 0
        anew = (
            f", {unplaced} of them of no partition, set aside again by every load until "
            "corrected at the source"
            if unplaced and unplaced < rejected
            else (", all of no partition, set aside again by every load" if unplaced else "")
        )
        warnings.append(
            f"{rejected} set aside in {REJECTS_TABLE} in all (query it with source = '{table}' "
            f"for the reasons{anew})"
        )
    if empty_files:
        metadata["empty_files"] = dg.MetadataValue.json(list(empty_files))
        warnings.append(
            f"{len(empty_files)} file(s) empty, without even a header line, as a failed "
            f"export leaves them: {listed(list(empty_files))}. If the day had rows, deliver the file again and "
            "re-materialize its day"
        )
    if gone:
        metadata["files_gone"] = dg.MetadataValue.json(gone)
        warnings.append(
            f"{len(gone)} file(s) loaded before are no longer delivered, and their "
            f"{sum(gone.values())} row(s) left raw.{table} with them: "
            + listed([f"{name} ({rows} rows)" for name, rows in gone.items()])
            + ". If that was not meant, deliver them again and re-materialize their day"
        )
    if warnings:
        return dg.AssetCheckResult(
            check_name=ROWS_ACCOUNTED,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"All {delivered} delivered rows accounted for; "
            + "; ".join(warnings)
            + ".",
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        check_name=ROWS_ACCOUNTED,
        passed=True,
        description=f"All {delivered} delivered rows are in raw.{table}.",
        metadata=metadata,
    )


def shop_days_result(table: str, changed: list[str]) -> dg.AssetCheckResult:
    """Warn with the days outside the run whose rows the shop changed since raw loaded them."""
    if not changed:
        return dg.AssetCheckResult(
            check_name=SHOP_DAYS_CURRENT,
            passed=True,
            description=f"Every other day's {table} rows are as the shop holds them.",
        )
    return dg.AssetCheckResult(
        check_name=SHOP_DAYS_CURRENT,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"The shop's {table} rows of {len(changed)} day(s) loaded before differ from what "
            f"raw holds (rows changed, added or removed in the shop since, such as a refund): "
            f"{listed(changed, 10)}. Their figures stay as loaded until those days are run "
            f"again: a backfill of daily_refresh from {changed[0]} to {changed[-1]} in the UI "
            f"(or each day alone), or crm-pipeline materialize --first {changed[0]} --last "
            f"{changed[-1]} when no run is under way."
        ),
        metadata={"changed_days": dg.MetadataValue.json(changed)},
    )
