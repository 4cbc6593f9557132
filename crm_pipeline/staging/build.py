"""Staging a raw table in DuckDB: type it, normalise it, quarantine what breaks a rule, merge
duplicates, and write the rest, for a range of days (or a whole snapshot).

Every raw row of the slice ends in exactly one place: staging.<table>,
quarantine.staging_rejects (with its rule, reason and delivered values) or
quarantine.merged_duplicates (with the row it was merged into).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from crm_pipeline.raw.tables import ddl, quote_ident, quote_literal
from crm_pipeline.reporting import personal_columns
from crm_pipeline.staging.lookups import CACHE_TABLE, fill_cache, normaliser_id
from crm_pipeline.staging.phones import DEFAULT_PHONE_REGIONS, phone_reader
from crm_pipeline.staging.rules import (
    EARLIEST,
    EXACT_DUPLICATE,
    IMPLAUSIBLE_DATE,
    INVALID_VALUE,
    LATEST,
    MISSING_REQUIRED,
    PLAIN_NUMBER,
    REDELIVERED,
    REDELIVERED_CHANGED,
    SUPERSEDED,
    TIME_FORMATS,
    Source,
    parsed_sql,
    text,
)
from crm_pipeline.staging.schemas import STAGING_MODELS

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
NULLED_TABLE = "quarantine.nulled_values"
NULLED_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "column_name": "VARCHAR NOT NULL",
    "rows": "BIGINT NOT NULL",
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
    conn.execute(ddl(NULLED_TABLE, NULLED_COLUMNS))
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
    for log in (REJECTS_TABLE, MERGED_TABLE, NULLED_TABLE):
        conn.execute(f"DELETE FROM {log} WHERE source = ? AND {where}", [source.name, *params])


def _lookups(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    where: str,
    params: list,
    phone_regions: tuple[str, ...],
) -> list[str]:
    """Normalise the distinct delivered values not seen before; join clauses for all. Phones
    are read with the business's regions."""
    joins = []
    for lookup, (column, fn) in source.normalised.items():
        if getattr(fn, "phone_regions", None) is not None:
            fn = phone_reader(phone_regions)
        fill_cache(
            conn,
            fn,
            f"""
            SELECT DISTINCT {text(column)} AS raw
            FROM raw.{source.name} AS r
            WHERE {where} AND {text(column)} IS NOT NULL
            """,
            params,
        )
        joins.append(
            f"LEFT JOIN {CACHE_TABLE} AS n_{lookup} "
            f"ON n_{lookup}.normaliser = '{normaliser_id(fn)}' AND n_{lookup}.raw = {text(column)}"
        )
    return joins


def _invalid_sql(value: str, sql_type: str) -> str:
    """A delivered value that does not parse as its type, judged on the value itself (not on
    a default put in its place). A number the type would round (2.6 as a quantity, 10.005 as
    an amount in cents) is not valid either, nor one in a notation other than plain digits
    and a decimal point: DuckDB's cast reads 1e3, 1_000 and 0x10 as numbers, which a till
    or an export writing them means as something else."""
    parsed = parsed_sql(value, sql_type)
    bad = f"{value} IS NOT NULL AND ({parsed} IS NULL"
    if sql_type.startswith(("DECIMAL", "INTEGER", "TINYINT", "BIGINT", "SMALLINT")):
        bad += f" OR TRY_CAST({value} AS DOUBLE) IS DISTINCT FROM CAST({parsed} AS DOUBLE)"
        bad += f" OR NOT regexp_full_match({value}, '{PLAIN_NUMBER}')"
    return bad + ")"


def _described(sql_type: str) -> str:
    """A type as a reason names it; a date or time with the forms it may take."""
    if sql_type == "TIMESTAMP":
        return f"timestamp ({TIME_FORMATS})"
    if sql_type == "DATE":
        return "date (YYYY-MM-DD)"
    if sql_type.startswith("DECIMAL"):
        return f"{sql_type.lower()} (a point before the decimals: 12.50, not 12,50)"
    return sql_type.lower()


def _rule_sql(source: Source) -> tuple[str, str]:
    """SQL for the first rule a typed row breaks (NULL when none) and the reason given."""
    missing = [
        (f"t.p_{c.name} IS NULL" if c.parses else f"t.{c.name} IS NULL", f"'{c.name} is missing'")
        for c in source.columns
        if c.required
    ]
    # A personal value (a birth date) is not quoted: the reason is read by many.
    personal = personal_columns(STAGING_MODELS[source.name])
    invalid = [
        (
            _invalid_sql(f"t.p_{c.name}", c.sql_type),
            f"'{c.name} is not a valid {_described(c.sql_type)}'"
            if c.name in personal
            else f"'{c.name} ' || to_json(t.p_{c.name}) || ' is not a valid {_described(c.sql_type)}'",
        )
        for c in source.columns
        if c.parses
    ]
    # A date or time no business keeps (a mistyped year such as 0205): before any other range
    # rule, and before pandas, which holds times of 1677 to 2262 only, fails on it.
    dated = [
        (
            IMPLAUSIBLE_DATE,
            f"coalesce(t.{c.name} NOT BETWEEN {EARLIEST} AND {LATEST}, FALSE)",
            f"'{c.name} ' || t.{c.name} || ' is before 1900 or after 2199: a mistyped year?'",
        )
        for c in source.columns
        if c.parses and c.sql_type in ("DATE", "TIMESTAMP")
    ]
    out_of_range = dated + [(k.rule, f"coalesce({k.when}, FALSE)", k.reason) for k in source.checks]
    classes = [
        (name, conds)
        for name, conds in ((MISSING_REQUIRED, missing), (INVALID_VALUE, invalid))
        if conds
    ]
    if not classes and not out_of_range:
        return "NULL", "NULL"
    whens = [
        f"  WHEN {' OR '.join(f'({w})' for w, _ in conds)} THEN '{name}'" for name, conds in classes
    ]
    whens += [f"  WHEN {w} THEN '{name}'" for name, w, _ in out_of_range]
    rule = "CASE\n" + "\n".join(whens) + "\nEND"

    def listed(conds: list[tuple[str, str]]) -> str:
        return "concat_ws('; ', " + ", ".join(f"CASE WHEN {w} THEN {r} END" for w, r in conds) + ")"

    reason = "CASE t.rule\n" + "".join(
        f"  WHEN '{name}' THEN {listed(conds)}\n" for name, conds in classes
    )
    # An out-of-range row lists every impossible value it has, not only the first rule's.
    reason += (
        f"  ELSE {listed([(w, r) for _, w, r in out_of_range]) if out_of_range else 'NULL'}\nEND"
    )
    return rule, reason


def _record_sql(columns: tuple[str, ...], raw: str = "r") -> str:
    """The delivered values of the raw row `raw` as a JSON object (what quarantine keeps of
    the row)."""
    pairs = ", ".join(f"{quote_literal(c)}, {raw}.{quote_ident(c)}" for c in columns)
    return f"json_object({pairs}, 'extra_columns', {raw}.extra_columns)"


def stage(
    conn: duckdb.DuckDBPyConnection,
    source: Source,
    raw_columns: tuple[str, ...],
    days: list[str] | None,
    loaded_at: datetime,
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS,
) -> None:
    """Stage one raw table for a range of days (None: the whole snapshot), replacing it;
    a phone written without its country code is read as one of `phone_regions`'.

    Only rows set aside are turned back into JSON records, and only rows whose business key
    repeats are ranked: the common path is one scan of raw and one insert.
    """
    where, params = slice_sql(days, "r.")
    joins = _lookups(conn, source, where, params, phone_regions)
    typed = ",\n    ".join(f"{c.expr} AS {quote_ident(c.name)}" for c in source.columns)
    parsed = "".join(f",\n    {c.parses} AS p_{c.name}" for c in source.columns if c.parses)
    lost = [c for c in source.columns if c.nulls_invalid]
    parsed += "".join(
        f",\n    ({text(c.nulls_invalid)} IS NOT NULL AND {c.expr} IS NULL) AS lost_{c.name}"
        for c in lost
    )
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
                {typed}{parsed}
            FROM raw.{source.name} AS r
            {" ".join(joins)}
            WHERE {where}
        ), ruled AS (
            SELECT t.*, {rule} AS rule
            FROM t
        )
        SELECT t.*, CASE WHEN t.rule IS NOT NULL THEN {reason} END AS reason
        FROM ruled AS t
        """,
        params,
    )
    delivered = f"""
        JOIN raw.{source.name} AS r
          ON r.source_file = s.source_file AND r.source_line = s.source_line AND {where}
    """
    conn.execute(
        f"""
        INSERT INTO {REJECTS_TABLE}
        SELECT ?, s.partition_date, s.source_file, s.source_line, s.rule, s.reason,
               {_record_sql(raw_columns)}, ?
        FROM staged AS s
        {delivered}
        WHERE s.rule IS NOT NULL
        """,
        [source.name, loaded_at, *params],
    )
    key = ", ".join(quote_ident(k) for k in source.key)
    on_key = " AND ".join(f"s.{quote_ident(k)} = d.{quote_ident(k)}" for k in source.key)

    def typed(row: str) -> str:
        """SQL: a row's typed values as one struct: copies that say the same compare equal
        however they were written (20 and 20.00 are one price)."""
        values = [quote_ident(c) for c in source.column_names]
        return f"struct_pack({', '.join(f'{v} := {row}.{v}' for v in values)})"

    def same(a: str, b: str) -> str:
        return f"{typed(a)} IS NOT DISTINCT FROM {typed(b)}"

    # A record already staged on another day (this range was cleared, so every staged row is
    # from elsewhere) is a re-delivery: the earliest staged copy stays.
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE redelivered AS
        SELECT s.partition_date, s.source_file, s.source_line,
               d.source_file AS kept_source_file, d.source_line AS kept_source_line,
               {same("s", "d")} AS same
        FROM staged AS s
        JOIN staging.{source.name} AS d ON {on_key}
        WHERE s.rule IS NULL
        QUALIFY row_number() OVER (
            PARTITION BY s.source_file, s.source_line
            ORDER BY d.partition_date, d.source_file, d.source_line
        ) = 1
        """
    )
    # So is one staged on an earlier day of this range (a file delivered again a day later,
    # loaded in one run with the first): the kept copy of its first day stays, as when the
    # days are run one by one. Only the lineage and key are carried (the staged rows are
    # wide), and a one-day run has no earlier day to look at.
    if days is not None and len(days) > 1:
        keys = ", ".join(f"s.{quote_ident(k)}" for k in source.key)
        conn.execute(
            f"""
            INSERT INTO redelivered
            WITH repeated AS (
                SELECT {key}
                FROM staged
                WHERE rule IS NULL
                GROUP BY ALL
                HAVING min(partition_date) < max(partition_date)
            ), candidates AS (
                SELECT s.partition_date, s.source_file, s.source_line, {keys}
                FROM staged AS s
                SEMI JOIN repeated AS d ON {on_key}
                ANTI JOIN redelivered AS x
                  ON x.source_file = s.source_file AND x.source_line = s.source_line
                WHERE s.rule IS NULL
            ), d AS (
                FROM candidates
                QUALIFY row_number() OVER (
                    PARTITION BY {key}
                    ORDER BY partition_date, source_file DESC, source_line DESC
                ) = 1
            )
            SELECT s.partition_date, s.source_file, s.source_line, d.source_file, d.source_line,
                   {same("a", "b")}
            FROM candidates AS s
            JOIN d ON {on_key}
            JOIN staged AS a
              ON a.partition_date = s.partition_date
             AND a.source_file = s.source_file AND a.source_line = s.source_line
            JOIN staged AS b
              ON b.partition_date = d.partition_date
             AND b.source_file = d.source_file AND b.source_line = d.source_line
            WHERE s.partition_date > d.partition_date
            """
        )
    # Labelled by whether the kept copy holds the same typed values (the first delivery's
    # values stay either way: a day's run does not rewrite another day).
    conn.execute(
        f"""
        INSERT INTO {MERGED_TABLE}
        SELECT ?, s.partition_date, s.source_file, s.source_line, s.kept_source_file,
               s.kept_source_line,
               CASE WHEN s.same THEN '{REDELIVERED}' ELSE '{REDELIVERED_CHANGED}' END,
               {_record_sql(raw_columns)}, ?
        FROM redelivered AS s
        {delivered}
        """,
        [source.name, loaded_at, *params],
    )
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE ranked AS
        WITH repeated AS (
            SELECT partition_date, {key}
            FROM staged
            ANTI JOIN redelivered USING (source_file, source_line)
            WHERE rule IS NULL
            GROUP BY ALL
            HAVING count(*) > 1
        ), copies AS (
            SELECT s.partition_date, s.source_file, s.source_line, {_record_sql(raw_columns)} AS record,
                   md5(CAST({typed("s")} AS VARCHAR)) AS typed_hash,
                   {", ".join(f"s.{quote_ident(k)}" for k in source.key)}
            FROM staged AS s
            SEMI JOIN repeated AS d
              ON s.partition_date IS NOT DISTINCT FROM d.partition_date AND {on_key}
            ANTI JOIN redelivered AS x
              ON x.source_file = s.source_file AND x.source_line = s.source_line
            {delivered}
            WHERE s.rule IS NULL
        )
        SELECT
            *,
            row_number() OVER latest AS copy_no,
            first_value(source_file) OVER latest AS kept_source_file,
            first_value(source_line) OVER latest AS kept_source_line,
            first_value(typed_hash) OVER latest AS kept_hash
        FROM copies
        WINDOW latest AS (
            PARTITION BY partition_date, {key}
            ORDER BY source_file DESC, source_line DESC
        )
        """,
        params,
    )
    conn.execute(
        f"""
        INSERT INTO {MERGED_TABLE}
        SELECT
            ?, partition_date, source_file, source_line, kept_source_file, kept_source_line,
            CASE
                WHEN typed_hash = kept_hash THEN '{EXACT_DUPLICATE}'
                ELSE '{SUPERSEDED}'
            END,
            record,
            ?
        FROM ranked
        WHERE copy_no > 1
        """,
        [source.name, loaded_at],
    )
    columns = ", ".join(f"s.{quote_ident(c)}" for c in source.column_names)
    conn.execute(
        f"""
        INSERT INTO staging.{source.name}
        SELECT {columns}, s.source_file, s.source_line, s.partition_date, ?
        FROM staged AS s
        ANTI JOIN (
            SELECT source_file, source_line FROM ranked WHERE copy_no > 1
            UNION ALL
            SELECT source_file, source_line FROM redelivered
        ) AS m
          ON m.source_file = s.source_file AND m.source_line = s.source_line
        WHERE s.rule IS NULL
        """,
        [loaded_at],
    )
    if lost:
        counts = ", ".join(f"('{c.name}', lost_{c.name})" for c in lost)
        conn.execute(
            f"""
            INSERT INTO {NULLED_TABLE}
            SELECT ?, partition_date, v.column_name, count(*), ?
            FROM staged, (VALUES {counts}) AS v(column_name, lost)
            WHERE rule IS NULL AND v.lost
            GROUP BY ALL
            """,
            [source.name, loaded_at],
        )
    for temp in ("staged", "ranked", "redelivered"):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
