"""What an operator sees for a table: row count, column schema with descriptions, a preview
with personal data masked."""

from __future__ import annotations

import unicodedata

import dagster as dg
import duckdb
import pandas as pd
import pandera.pandas as pa

PREVIEW_ROWS = 5


def personal_columns(model: type[pa.DataFrameModel]) -> frozenset[str]:
    """The columns the contract tags as personal data."""
    return frozenset(
        name
        for name, spec in model.to_schema().columns.items()
        if (spec.metadata or {}).get("personal_data")
    )


def masked(value: object) -> str:
    """A personal value as its shape, for an operator's eyes: digits as 9, letters as x or X,
    the rest kept ('Anna.Berg@gmail.com' -> 'Xxxx.Xxxx@xxxxx.xxx', '(415) 555-0100' ->
    '(999) 999-9999'). What is wrong with a value still shows; the value does not. A
    combining mark (a vowel sign, a virama, an accent typed apart) is part of a letter, and
    masked as one: kept, the marks of a name in Devanagari or Thai spell out most of it."""
    return "".join(
        "9"
        if c.isdigit()
        else ("X" if c.isupper() else "x")
        if c.isalpha() or unicodedata.category(c).startswith("M")
        else c
        for c in str(value)
    )


def schema_of(model: type[pa.DataFrameModel], types: list[tuple[str, str]]) -> dg.TableSchema:
    """Columns with their warehouse types, the contract's descriptions and personal-data tags."""
    contract = model.to_schema().columns
    personal = personal_columns(model)
    columns = []
    for column, data_type in types:
        spec = contract.get(column)
        columns.append(
            dg.TableColumn(
                name=column,
                type=data_type,
                description=spec.description if spec is not None else None,
                tags={"personal_data": "true"} if column in personal else {},
            )
        )
    return dg.TableSchema(columns=columns)


def column_schema(
    conn: duckdb.DuckDBPyConnection, table: str, model: type[pa.DataFrameModel]
) -> dg.TableSchema:
    """The table's columns as the warehouse has them, described by the contract."""
    schema, name = table.split(".")
    types = conn.execute(
        """
        SELECT column_name, data_type
        FROM information_schema.columns
        WHERE table_schema = ? AND table_name = ?
        ORDER BY ordinal_position
        """,
        [schema, name],
    ).fetchall()
    return schema_of(model, types)


def preview(
    conn: duckdb.DuckDBPyConnection,
    query: str,
    params: list | None = None,
    personal: frozenset[str] = frozenset(),
) -> str:
    """A few rows as a Markdown table (values shortened so the UI stays readable), the
    `personal` columns masked: Dagster keeps this in its run storage, out of reach of an
    erasure, and an operator needs a value's shape at most."""
    # Each value as DuckDB writes it (a date as 1980-01-02, an amount as 169400.00), and
    # shown as it is: the table renderer's own number parsing would turn a masked 999999.99
    # into 1e+06.
    frame = conn.execute(
        f"SELECT CAST(COLUMNS(*) AS VARCHAR) FROM ({query}) LIMIT {PREVIEW_ROWS}", params or []
    ).df()
    for column in personal & set(frame.columns):
        frame[column] = frame[column].map(lambda v: v if pd.isna(v) else masked(v))
    frame = frame.astype(str).apply(lambda col: col.str.slice(0, 40))
    return frame.to_markdown(index=False, disable_numparse=True) if len(frame) else "_no rows_"


def table_metadata(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    model: type[pa.DataFrameModel],
    where: str = "TRUE",
    params: list | None = None,
    schema: bool = True,
    days: list[str] | None = None,
) -> dict[str, dg.MetadataValue | int]:
    """Row count (of the slice written), column schema and preview, in Dagster's standard keys.

    schema=False leaves the column schema to the asset's definition, for tables whose
    definition declares the warehouse's own columns and types (raw and staging): a run over a
    range of days repeats its metadata on each day's materialization, and the schema is most
    of it. So does the row count: over more than one of `days` (the partitions written) it is
    the range's, `rows_in_run`, not Dagster's row count, which the UI shows as the day's.
    """
    query = f"SELECT * FROM {table} WHERE {where}"
    rows = conn.execute(f"SELECT count(*) FROM ({query})", params or []).fetchone()[0]
    total = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    counted = "rows_in_run" if days is not None and len(days) > 1 else "dagster/row_count"
    metadata: dict[str, dg.MetadataValue | int] = {
        counted: rows,
        "table_rows": total,
        "dagster/table_name": dg.MetadataValue.text(table),
        "preview": dg.MetadataValue.md(preview(conn, query, params, personal_columns(model))),
    }
    if schema:
        metadata["dagster/column_schema"] = column_schema(conn, table, model)
    return metadata
