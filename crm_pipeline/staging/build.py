"""Staging a raw table in DuckDB: type it, normalise it, quarantine what breaks a rule, merge
duplicates, and write the rest, for a range of days (or a whole snapshot).

Every raw row of the slice ends in exactly one place: staging.<table>,
quarantine.staging_rejects (with its rule, reason and delivered values) or
quarantine.merged_duplicates (with the row it was merged into).
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from crm_pipeline.raw.tables import ddl, quote_ident, quote_literal
from crm_pipeline.staging.normalise import over_distinct
from crm_pipeline.staging.rules import (
    EXACT_DUPLICATE,
    INVALID_VALUE,
    MISSING_REQUIRED,
    OUT_OF_RANGE,
    SUPERSEDED,
    Source,
    text,
)

REJECTS_TABLE = "quarantine.staging_rejects"
MERGED_TABLE = "quarantine.merged_duplicates"
LINEAGE = {
    "source_file": "VARCHAR NOT NULL",
    "source_line": "BIGINT NOT NULL",
    "partition_date": "DATE",
    "loaded_at": "TIMESTAMP NOT NULL",
}
REJECTS_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "source_file": "VARCHAR NOT NULL",
    "source_line": "BIGINT NOT NULL",
    "rule": "VARCHAR NOT NULL",
    "reason": "VARCHAR NOT NULL",
    "record": "JSON NOT NULL",
    "loaded_at": "TIMESTAMP NOT NULL",
}
MERGED_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "source_file": "VARCHAR NOT NULL",
    "source_line": "BIGINT NOT NULL",
    "kept_source_file": "VARCHAR NOT NULL",
    "kept_source_line": "BIGINT NOT NULL",
    "rule": "VARCHAR NOT NULL",
    "record": "JSON NOT NULL",
    "loaded_at": "TIMESTAMP NOT NULL",
}


def staging_columns(source: Source) -> dict[str, str]:
    """The staging table's columns and types: typed values, then lineage."""
    return {c.name: c.sql_type for c in source.columns} | LINEAGE


def ensure_tables(conn: duckdb.DuckDBPyConnection, source: Source) -> None:
    for schema in ("staging", "quarantine"):
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    conn.execute(ddl(REJECTS_TABLE, REJECTS_COLUMNS))
    conn.execute(ddl(MERGED_TABLE, MERGED_COLUMNS))
    conn.execute(ddl(f"staging.{source.name}", staging_columns(source)))


def slice_sql(days: list[str] | None, alias: str = "") -> tuple[str, list]:
    """The WHERE condition for a range of days, or TRUE for a snapshot."""
    if days is None:
        return "TRUE", []
    return f"{alias}partition_date BETWEEN ? AND ?", [days[0], days[-1]]


def clear(conn: duckdb.DuckDBPyConnection, source: Source, days: list[str] | None) -> None:
    """Remove what an earlier staging of these days left, so a re-run replaces it."""
    where, params = slice_sql(days)
    conn.execute(f"DELETE FROM staging.{source.name} WHERE {where}", params)
    for log in (REJECTS_TABLE, MERGED_TABLE):
        conn.execute(f"DELETE FROM {log} WHERE source = ? AND {where}", [source.name, *params])


def _lookups(
    conn: duckdb.DuckDBPyConnection, source: Source, where: str, params: list
) -> list[str]:
    """Normalise each distinct delivered value once in Python; join clauses for the results."""
    joins = []
    for lookup, (column, fn) in source.normalised.items():
        values = conn.execute(
            f"""
            SELECT DISTINCT {text(column)} AS raw
            FROM raw.{source.name} AS r
            WHERE {where} AND {text(column)} IS NOT NULL
            """,
            params,
        ).df()
        values["value"] = over_distinct(values["raw"], fn).astype(object)
        frame = pd.DataFrame({"raw": values["raw"], "value": values["value"]})
        conn.register("lookup_frame", frame)
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE n_{lookup} AS "
            "SELECT CAST(raw AS VARCHAR) AS raw, CAST(value AS VARCHAR) AS value FROM lookup_frame"
        )
        conn.unregister("lookup_frame")
        joins.append(f"LEFT JOIN n_{lookup} ON n_{lookup}.raw = {text(column)}")
    return joins


def _rule_sql(source: Source) -> tuple[str, str]:
    """SQL for the first rule a typed row breaks (NULL when none) and the reason given."""
    missing = [
        (f"t.p_{c.name} IS NULL" if c.parses else f"t.{c.name} IS NULL", f"'{c.name} is missing'")
        for c in source.columns
        if c.required
    ]
    invalid = [
        (
            f"t.p_{c.name} IS NOT NULL AND t.{c.name} IS NULL",
            f"'{c.name} ' || to_json(t.p_{c.name}) || ' is not a valid {c.sql_type.lower()}'",
        )
        for c in source.columns
        if c.parses
    ]
    out_of_range = [(f"coalesce({k.when}, FALSE)", k.reason) for k in source.checks]
    classes = [(MISSING_REQUIRED, missing), (INVALID_VALUE, invalid), (OUT_OF_RANGE, out_of_range)]
    classes = [(rule, conds) for rule, conds in classes if conds]
    if not classes:
        return "NULL", "NULL"
    rule = (
        "CASE\n"
        + "\n".join(
            f"  WHEN {' OR '.join(f'({w})' for w, _ in conds)} THEN '{name}'"
            for name, conds in classes
        )
        + "\nEND"
    )
    reason = (
        "CASE t.rule\n"
        + "\n".join(
            f"  WHEN '{name}' THEN concat_ws('; ', "
            + ", ".join(f"CASE WHEN {w} THEN {r} END" for w, r in conds)
            + ")"
            for name, conds in classes
        )
        + "\nEND"
    )
    return rule, reason


def _record_sql(columns: tuple[str, ...]) -> str:
    """The delivered values as a JSON object (what quarantine keeps of the row)."""
    pairs = ", ".join(f"{quote_literal(c)}, r.{quote_ident(c)}" for c in columns)
    return f"json_object({pairs}, 'extra_columns', r.extra_columns)"


def stage(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    raw_columns: tuple[str, ...],
    days: list[str] | None,
    loaded_at: datetime,
) -> None:
    """Stage one raw table for a range of days (None: the whole snapshot), replacing it."""
    where, params = slice_sql(days, "r.")
    joins = _lookups(conn, source, where, params)
    typed = ",\n    ".join(f"{c.expr} AS {quote_ident(c.name)}" for c in source.columns)
    parsed = "".join(f",\n    {c.parses} AS p_{c.name}" for c in source.columns if c.parses)
    rule, reason = _rule_sql(source)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE staged AS
        WITH t AS (
            SELECT
                r.source_file,
                r.source_line,
                r.partition_date,
                r.loaded_at AS raw_loaded_at,
                {_record_sql(raw_columns)} AS record,
                {typed}{parsed}
            FROM raw.{source.name} AS r
            {" ".join(joins)}
            WHERE {where}
        ), ruled AS (
            SELECT t.*, {rule} AS rule
            FROM t
        )
        SELECT t.*, {reason} AS reason
        FROM ruled AS t
        """,
        params,
    )
    conn.execute(
        f"""
        INSERT INTO {REJECTS_TABLE}
        SELECT ?, partition_date, source_file, source_line, rule, reason, record, ?
        FROM staged
        WHERE rule IS NOT NULL
        """,
        [source.name, loaded_at],
    )
    key = ", ".join(quote_ident(k) for k in source.key)
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ranked AS
        SELECT
            *,
            row_number() OVER latest AS copy_no,
            first_value(source_file) OVER latest AS kept_source_file,
            first_value(source_line) OVER latest AS kept_source_line,
            first_value(md5(CAST(record AS VARCHAR))) OVER latest AS kept_hash
        FROM staged
        WHERE rule IS NULL
        WINDOW latest AS (
            PARTITION BY partition_date, {key}
            ORDER BY source_file DESC, source_line DESC
        )
        """
    )
    conn.execute(
        f"""
        INSERT INTO {MERGED_TABLE}
        SELECT
            ?, partition_date, source_file, source_line, kept_source_file, kept_source_line,
            CASE
                WHEN md5(CAST(record AS VARCHAR)) = kept_hash THEN '{EXACT_DUPLICATE}'
                ELSE '{SUPERSEDED}'
            END,
            record,
            ?
        FROM ranked
        WHERE copy_no > 1
        """,
        [source.name, loaded_at],
    )
    columns = ", ".join(quote_ident(c) for c in source.column_names)
    conn.execute(
        f"""
        INSERT INTO staging.{source.name}
        SELECT {columns}, source_file, source_line, partition_date, ?
        FROM ranked
        WHERE copy_no = 1
        ORDER BY {key}
        """,
        [loaded_at],
    )
    for temp in ("staged", "ranked", *(f"n_{lookup}" for lookup in source.normalised)):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
