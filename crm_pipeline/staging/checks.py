"""The staging layer's checks: the contract holds, keys are unique, every raw row is
conserved (raw = staging + quarantined + merged duplicates, per partition), and every day was
staged by this version of the code."""

from __future__ import annotations

import dagster as dg
import duckdb

from crm_pipeline.contracts import (
    SHOWN_EXAMPLES,
    beside,
    contract_check,
    failing_rows_markdown,
    repeated_keys,
    validate_queries,
)
from crm_pipeline.failures import listed
from crm_pipeline.raw.checks import LINEAGE
from crm_pipeline.staging.build import MERGED_TABLE, REJECTS_TABLE, slice_sql
from crm_pipeline.staging.rules import (
    CONFLICTING_MERGES,
    REDELIVERED,
    REDELIVERED_CHANGED,
    SOURCES,
    SUPERSEDED,
    Source,
)
from crm_pipeline.staging.schemas import STAGING_MODELS, MergedDuplicates, StagingRejects
from crm_pipeline.staging.staged_with import staged_by_other_code

CONTRACT = "contract"
CONSERVED = "rows_conserved"
THIS_VERSION = "staged_by_this_version"
# Days a warning lists by name; the rest are counted.
LISTED_DAYS = 10


def check_specs(key: dg.AssetKey, daily: bool) -> list[dg.AssetCheckSpec]:
    # A snapshot is staged whole by every run: only days can be left from another version.
    version = dg.AssetCheckSpec(
        THIS_VERSION,
        asset=key,
        description=(
            "Every day of the table was read and staged by this version's code (the raw and "
            "staging modules, the landing contract, the versions of the libraries that read "
            "and clean; comments aside); warns with the days other code staged (after an "
            "upgrade), which keep its reading and cleaning rules until they are run again."
        ),
    )
    return [
        *([version] if daily else []),
        dg.AssetCheckSpec(
            CONTRACT,
            asset=key,
            blocking=True,
            description=(
                "Every staged row satisfies the strict pandera contract, the business key is "
                "unique and not null across the table, and the quarantine rows of the load do too."
            ),
        ),
        dg.AssetCheckSpec(
            CONSERVED,
            asset=key,
            blocking=True,
            description=(
                "Per partition: raw rows = staging rows + quarantined rows + merged duplicates. "
                "Fails on a lost or doubled row, and on a row of any day merged into a copy no "
                "longer staged (naming the days to run again); warns with the counts when rows "
                "were set aside."
            ),
        ),
    ]


def contract_result(
    conn: duckdb.DuckDBPyConnection, source: Source, days: list[str] | None
) -> dg.AssetCheckResult:
    where, params = slice_sql(days)
    table = f"staging.{source.name}"
    with beside(
        conn, lambda other: repeated_keys(other, table, source.key, partitions=True)
    ) as repeats:
        logged = f"source = ? AND {where}"
        outcome = validate_queries(
            conn,
            [
                (
                    f"SELECT * FROM {table} WHERE {where}",
                    params,
                    STAGING_MODELS[source.name],
                    [*source.key, *LINEAGE],
                ),
                (
                    f"SELECT * FROM {REJECTS_TABLE} WHERE {logged}",
                    [source.name, *params],
                    StagingRejects,
                    LINEAGE,
                ),
                (
                    f"SELECT * FROM {MERGED_TABLE} WHERE {logged}",
                    [source.name, *params],
                    MergedDuplicates,
                    LINEAGE,
                ),
            ],
        )
    return contract_check(
        CONTRACT,
        table,
        outcome,
        repeats.result(),
        "A record delivered again on another day: remove the second delivery and re-run its day.",
    )


def conservation(
    conn: duckdb.DuckDBPyConnection, source: str, days: list[str] | None
) -> list[tuple]:
    """Per partition: raw rows, staged rows, quarantined rows, merged rows."""
    where, params = slice_sql(days)
    return conn.execute(
        f"""
        WITH counts AS (
            SELECT partition_date, count(*) AS raw, 0 AS staged, 0 AS rejected, 0 AS merged
            FROM raw.{source} WHERE {where} GROUP BY ALL
            UNION ALL
            SELECT partition_date, 0, count(*), 0, 0
            FROM staging.{source} WHERE {where} GROUP BY ALL
            UNION ALL
            SELECT partition_date, 0, 0, count(*), 0
            FROM {REJECTS_TABLE} WHERE source = ? AND {where} GROUP BY ALL
            UNION ALL
            SELECT partition_date, 0, 0, 0, count(*)
            FROM {MERGED_TABLE} WHERE source = ? AND {where} GROUP BY ALL
        )
        SELECT partition_date, sum(raw), sum(staged), sum(rejected), sum(merged)
        FROM counts
        GROUP BY ALL
        ORDER BY 1
        """,
        [*params, *params, source, *params, source, *params],
    ).fetchall()


def unplaced_rows(
    conn: duckdb.DuckDBPyConnection, source: str, days: list[str] | None
) -> list[dict]:
    """A few raw rows, by lineage, that are in none of staging, quarantine and merged
    duplicates, or in more than one place."""
    where, params = slice_sql(days)
    result = conn.execute(
        f"""
        WITH placed AS (
            SELECT source_file, source_line FROM staging.{source} WHERE {where}
            UNION ALL
            SELECT source_file, source_line FROM {REJECTS_TABLE} WHERE source = ? AND {where}
            UNION ALL
            SELECT source_file, source_line FROM {MERGED_TABLE} WHERE source = ? AND {where}
        ), lost AS (
            SELECT r.source_file, r.source_line, 'in raw, not staged, quarantined or merged'
            FROM raw.{source} AS r
            ANTI JOIN placed AS p USING (source_file, source_line)
            WHERE {slice_sql(days, "r.")[0]}
            LIMIT {SHOWN_EXAMPLES}
        ), doubled AS (
            SELECT source_file, source_line, 'placed ' || count(*) || ' times'
            FROM placed
            GROUP BY ALL
            HAVING count(*) > 1
            LIMIT {SHOWN_EXAMPLES}
        )
        SELECT * FROM lost
        UNION ALL
        SELECT * FROM doubled
        ORDER BY ALL
        """,
        [*params, source, *params, source, *params, *params],
    )
    return [dict(zip(LINEAGE + ("problem",), row, strict=True)) for row in result.fetchall()]


def orphaned_merges(conn: duckdb.DuckDBPyConnection, source: str) -> dict[str, int]:
    """Per day, its rows merged as deliveries again of a copy on another day that is no longer
    staged (that day's file delivered anew without it, and run again): in no table."""
    rows = conn.execute(
        f"""
        SELECT CAST(m.partition_date AS VARCHAR), count(*)
        FROM {MERGED_TABLE} AS m
        ANTI JOIN staging.{source} AS s
          ON s.source_file = m.kept_source_file AND s.source_line = m.kept_source_line
        WHERE m.source = ? AND m.rule IN (?, ?)
        GROUP BY ALL
        ORDER BY 1
        """,
        [source, REDELIVERED, REDELIVERED_CHANGED],
    ).fetchall()
    return dict(rows)


def releasable_rows(conn: duckdb.DuckDBPyConnection, source: str) -> dict[str, int]:
    """Per day, its rows quarantined for a product or store not in the reference data that is
    there now (the reference file delivered again with it): a run of the day stages them."""
    parts, params = [], []
    for check in SOURCES[source].checks:
        if check.reference is None:
            continue
        column, table, key = check.reference
        pattern = f"^{column} (.*) is not in staging\\.{table}$"
        parts.append(
            f"""
            SELECT CAST(r.partition_date AS VARCHAR) AS day
            FROM {REJECTS_TABLE} AS r
            SEMI JOIN staging.{table} AS k
              ON k.{key} = regexp_extract(r.reason, ?, 1)
            WHERE r.source = ? AND r.rule = ?
            """
        )
        params += [pattern, source, check.rule]
    if not parts:
        return {}
    rows = conn.execute(
        f"SELECT day, count(*) FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL ORDER BY 1",
        params,
    ).fetchall()
    return dict(rows)


def held_by_reference_rejects(
    conn: duckdb.DuckDBPyConnection, source: str, days: list[str] | None
) -> list[tuple[str, str, int, str]]:
    """The keys this source's rows of `days` were quarantined for as not in a reference table
    (a product, a store) that its delivery does hold, set aside by staging (a price written
    12,50): (table, key, rows, why the reference row was set aside), most rows first."""
    where, params = slice_sql(days)
    parts, values = [], []
    for check in SOURCES[source].checks:
        if check.reference is None:
            continue
        column, table, key = check.reference
        parts.append(
            f"""
            SELECT '{table}' AS tab, k.key, count(*) AS n, any_value(k.reason) AS why
            FROM {REJECTS_TABLE} AS r
            JOIN (
                SELECT upper(trim(json_extract_string(record, '$.{key}'))) AS key,
                       min(reason) AS reason
                FROM {REJECTS_TABLE}
                WHERE source = ?
                GROUP BY ALL
            ) AS k ON k.key = regexp_extract(r.reason, ?, 1)
            WHERE r.source = ? AND r.rule = ? AND {where}
            GROUP BY ALL
            """
        )
        values += [table, f"^{column} (.*) is not in staging\\.{table}$", source, check.rule]
        values += params
    if not parts:
        return []
    return conn.execute(
        f"SELECT * FROM ({' UNION ALL '.join(parts)}) ORDER BY n DESC, tab, key", values
    ).fetchall()


def conserved_result(
    conn: duckdb.DuckDBPyConnection, source: str, days: list[str] | None
) -> dg.AssetCheckResult:
    rows = conservation(conn, source, days)
    totals = [sum(r[i] for r in rows) for i in range(1, 5)]
    metadata = dict(zip(("raw_rows", "staged_rows", "quarantined_rows", "merged_rows"), totals))
    broken = [r for r in rows if r[1] != r[2] + r[3] + r[4]]
    if broken:
        worst = "; ".join(
            f"{p or 'snapshot'}: raw {a}, staged {s}, quarantined {q}, merged {m} ({a - s - q - m:+d})"
            for p, a, s, q, m in broken[:10]
        )
        rows = unplaced_rows(conn, source, days)
        if rows:
            metadata["failing_rows"] = dg.MetadataValue.md(failing_rows_markdown(rows))
        return dg.AssetCheckResult(
            check_name=CONSERVED,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"staging.{source} does not conserve raw rows in {len(broken)} partition(s): "
                f"{worst}. For example: "
                + "; ".join(
                    f"{r['source_file']} line {r['source_line']}: {r['problem']}" for r in rows
                )
            ),
            metadata=metadata,
        )
    orphans = orphaned_merges(conn, source)
    if orphans:
        days_to_run = list(orphans)  # in day order
        return dg.AssetCheckResult(
            check_name=CONSERVED,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                "; ".join(f"{n} row(s) of {day}" for day, n in orphans.items())
                + " merged into a copy no longer staged (its delivery removed or changed): in "
                f"no table now. Re-materialize staging.{source} for "
                + ", ".join(days_to_run)
                + " to stage them from their own delivery."
            ),
            metadata=metadata | {"days_to_run": dg.MetadataValue.json(days_to_run)},
        )
    raw, staged, rejected, merged = totals
    where, params = slice_sql(days)
    conflicts = dict(
        conn.execute(
            f"SELECT rule, count(*) FROM {MERGED_TABLE} "
            f"WHERE source = ? AND list_contains(?, rule) AND {where} GROUP BY ALL",
            [source, list(CONFLICTING_MERGES), *params],
        ).fetchall()
    )
    released = releasable_rows(conn, source)
    if rejected or conflicts or released:
        metadata |= {f"merged_{rule}": n for rule, n in conflicts.items()}
        merges = [
            f"{n} into another version of the same record with other values ({rule}; "
            + (
                "the row of the day's file last by name, then its last line, is kept"
                if rule == SUPERSEDED
                else "the earliest day's delivery is kept"
            )
            + f": see {MERGED_TABLE} where source = '{source}' and rule = '{rule}')"
            for rule, n in sorted(conflicts.items())
        ]
        said = ["of the merged, " + ", ".join(merges)] if merges else []
        if rejected:
            said.append(f"the quarantined are in {REJECTS_TABLE} where source = '{source}'")
        held = held_by_reference_rejects(conn, source, days) if rejected else []
        if held:
            shown = "; ".join(f"{table} {key}: {why}" for table, key, _, why in held[:5])
            said.append(
                f"{sum(n for *_, n, _ in held)} row(s) quarantined for a product or store that "
                f"the reference delivery holds but staging set aside ({shown}): correct it "
                f"there, then re-materialize the reference table and staging.{source} for "
                "their days"
            )
        if released:
            metadata["days_to_release"] = dg.MetadataValue.json(list(released))
            said.append(
                f"{sum(released.values())} row(s) quarantined on "
                + ", ".join(released)
                + " for a product or store the reference data holds now: re-materialize "
                f"staging.{source} for these days to stage them"
            )
        return dg.AssetCheckResult(
            check_name=CONSERVED,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"All {raw} raw rows conserved: {staged} staged, {merged} merged duplicates, "
                f"{rejected} quarantined; " + "; ".join(said) + "."
            ),
            metadata=metadata,
        )
    return dg.AssetCheckResult(
        check_name=CONSERVED,
        passed=True,
        description=f"All {raw} raw rows conserved: {staged} staged, {merged} merged duplicates.",
        metadata=metadata,
    )


def version_result(conn: duckdb.DuckDBPyConnection, source: str) -> dg.AssetCheckResult:
    days = staged_by_other_code(conn, source)
    if not days:
        return dg.AssetCheckResult(
            check_name=THIS_VERSION,
            passed=True,
            description=f"Every day of staging.{source} was staged by this version.",
        )
    named = listed(days, LISTED_DAYS)
    return dg.AssetCheckResult(
        check_name=THIS_VERSION,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=(
            f"{len(days)} day(s) of staging.{source} ({days[0]}..{days[-1]}: {named}) were read "
            "and staged by an earlier version of crm-pipeline, and keep its reading and "
            "cleaning rules (a file or row it set aside, a value it read otherwise) until they "
            "are run again: run every day once (crm-pipeline materialize, with no --first and "
            "no --select, or a backfill of daily_refresh over them in the UI)."
        ),
        metadata={"days_to_run": dg.MetadataValue.json(days)},
    )
