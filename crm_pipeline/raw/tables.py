"""The raw layer's tables: one per source table, plus the delivery log and the reject quarantine.

Raw keeps every delivered value as delivered, as text; typing is staging's job. Each row
carries its lineage: the file (or shop table) it came from, its record number there, the
partition it belongs to and when it was loaded.
"""

from __future__ import annotations

import duckdb

LINEAGE_COLUMNS = {
    "extra_columns": "VARCHAR",
    "source_file": "VARCHAR NOT NULL",
    "source_line": "BIGINT NOT NULL",
    "source_lines": "INTEGER NOT NULL",
    "partition_date": "DATE",
    "loaded_at": "TIMESTAMP NOT NULL",
}

REJECTS_TABLE = "quarantine.raw_rejects"
DELIVERIES_TABLE = "raw.deliveries"

REJECTS_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "source_file": "VARCHAR NOT NULL",
    "source_line": "BIGINT",
    "raw_text": "VARCHAR",
    "reason": "VARCHAR NOT NULL",
    "detail": "VARCHAR NOT NULL",
    "loaded_at": "TIMESTAMP NOT NULL",
}

DELIVERIES_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "partition_date": "DATE",
    "source_file": "VARCHAR NOT NULL",
    "source_rows": "BIGINT NOT NULL",
    "loaded_at": "TIMESTAMP NOT NULL",
}


def ddl(table: str, columns: dict[str, str]) -> str:
    body = ",\n    ".join(f"{name} {kind}" for name, kind in columns.items())
    return f"CREATE TABLE IF NOT EXISTS {table} (\n    {body}\n)"


def table_exists(conn: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the warehouse has the table ('schema.name')."""
    schema, name = table.split(".")
    return bool(
        conn.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
            [schema, name],
        ).fetchall()[0][0]
    )


def sql_types(columns: dict[str, str]) -> list[tuple[str, str]]:
    """Column names and their warehouse types, constraints left out."""
    return [(name, kind.removesuffix(" NOT NULL")) for name, kind in columns.items()]


def id_text(expr: str) -> str:
    """SQL: a delivered id as ids are compared: a whole number written as a decimal, as a REAL
    column or a spreadsheet gives it ('90046.0'), is that number ('90046'). An order id typed
    INTEGER in the shop's orders and REAL in its items, or an account id a survey export saved
    through Excel, is then one id."""
    return f"regexp_replace({expr}, '^([0-9]+)\\.0+$', '\\1')"


def quote_ident(name: str) -> str:
    """A SQL identifier for any delivered column name (headers are untrusted input)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """A SQL string literal, for the few places DuckDB takes no parameter (read_csv options)."""
    return "'" + value.replace("'", "''") + "'"


def line_breaks_sql(value: str) -> str:
    """SQL counting the non-empty physical lines a delivered value adds to its record: its line
    breaks, less the empty lines it holds (conservation counts non-empty lines)."""
    parts = f"string_split({value}, chr(10))"
    empty = f"len(list_filter({parts}[2:-2], lambda s: s = '' OR s = chr(13)))"
    return f"CASE WHEN contains({value}, chr(10)) THEN len({parts}) - 1 - {empty} ELSE 0 END"


def accounted_sql(table: str, where: str) -> str:
    """Two CTEs, landed and rejected: per partition and file, the delivered lines raw.<table>
    holds and those quarantine.raw_rejects holds, of the rows matching `where`. Its
    parameters come twice: for raw, then after the source's name for the rejects."""
    return f"""
        landed AS (
            SELECT partition_date, source_file, sum(source_lines) AS n
            FROM raw.{table}
            WHERE {where}
            GROUP BY ALL
        ), rejected AS (
            SELECT partition_date, source_file, sum(1 + {line_breaks_sql("raw_text")}) AS n
            FROM {REJECTS_TABLE}
            WHERE source = ? AND ({where})
            GROUP BY ALL
        )
    """


def extra_columns_sql(extra: list[str], qualifier: str = "") -> str:
    """SQL for the extra_columns value: delivered columns outside the contract, as JSON."""
    if not extra:
        return "NULL"
    pairs = ", ".join(f"{quote_literal(c)}, {qualifier}{quote_ident(c)}" for c in extra)
    return f"json_object({pairs})"


def raw_column_types(columns: tuple[str, ...]) -> list[tuple[str, str]]:
    """A raw table's columns and warehouse types: delivered values as text, then lineage."""
    return [(c, "VARCHAR") for c in columns] + sql_types(LINEAGE_COLUMNS)


def ensure_raw_tables(
    conn: duckdb.DuckDBPyConnection, table: str, columns: tuple[str, ...]
) -> None:
    """Create the schemas, the raw table of one source, the delivery log and the quarantine."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
    conn.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    conn.execute(ddl(REJECTS_TABLE, REJECTS_COLUMNS))
    conn.execute(ddl(DELIVERIES_TABLE, DELIVERIES_COLUMNS))
    cols = [f"{quote_ident(c)} VARCHAR" for c in columns]
    cols += [f"{name} {kind}" for name, kind in LINEAGE_COLUMNS.items()]
    conn.execute(f"CREATE TABLE IF NOT EXISTS raw.{table} (\n    " + ",\n    ".join(cols) + "\n)")


def clear_slice(
    conn: duckdb.DuckDBPyConnection, table: str, first: str | None, last: str | None
) -> None:
    """Remove what an earlier load of these partitions left, so a re-run replaces it.

    With no partition bounds the whole source is replaced (reference data, account snapshot).
    Rejects that belong to no partition (a date no partition covers) are re-swept on every load.
    """
    if first is None:
        conn.execute(f"DELETE FROM raw.{table}")
        for log in (REJECTS_TABLE, DELIVERIES_TABLE):
            conn.execute(f"DELETE FROM {log} WHERE source = ?", [table])
        return
    conn.execute(f"DELETE FROM raw.{table} WHERE partition_date BETWEEN ? AND ?", [first, last])
    for log in (REJECTS_TABLE, DELIVERIES_TABLE):
        conn.execute(
            f"""
            DELETE FROM {log}
            WHERE source = ?
              AND (partition_date BETWEEN ? AND ? OR partition_date IS NULL)
            """,
            [table, first, last],
        )
