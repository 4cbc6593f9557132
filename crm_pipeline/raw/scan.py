"""Reading delivered files with DuckDB's CSV reader: every record in file order with its
number, and DuckDB's rejected records quarantined with their own text and reason."""

from __future__ import annotations

from datetime import datetime
from itertools import count
from pathlib import Path

import duckdb

from crm_pipeline.raw.delivery import Delivery
from crm_pipeline.raw.tables import REJECTS_TABLE, quote_literal

READ_ID = count()


def register_files(conn: duckdb.DuckDBPyConnection, files: list[Delivery]) -> str:
    """A temp table of the files by their position in `files` (the scan's __crm_file)."""
    name = f"files_{next(READ_ID)}"
    conn.execute(f"CREATE TEMP TABLE {name} (__index BIGINT, __name VARCHAR, __partition DATE)")
    conn.executemany(
        f"INSERT INTO {name} VALUES (?, ?, ?)",
        [(i, f.name, f.partition_date) for i, f in enumerate(files)],
    )
    return name


def reject_lines(
    conn: duckdb.DuckDBPyConnection, source: str, rows: list[tuple], loaded_at: datetime
) -> None:
    """rows: (partition_date, file name, record number, raw text, reason, detail)."""
    if rows:
        conn.executemany(
            f"INSERT INTO {REJECTS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(source, *row, loaded_at) for row in rows],
        )


_REASONS = {
    "MISSING COLUMNS": ("missing_values", "the line has fewer fields than the header (cut off?)"),
    "TOO MANY COLUMNS": ("extra_values", "the line has more fields than the header"),
    "INVALID ENCODING": ("invalid_encoding", "bytes that are not UTF-8; re-export as UTF-8"),
    "UNQUOTED VALUE": ("unquoted_value", "a quote inside an unquoted field"),
    "LINE SIZE OVER MAXIMUM": ("line_too_long", "the line exceeds the maximum line size"),
    "CAST ERROR": ("unparseable", "a value does not parse"),
}


def _literal_path(path: Path) -> str:
    """A path DuckDB reads as that one file: its glob characters bracketed."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in str(path))


def scan(
    conn: duckdb.DuckDBPyConnection,
    files: list[Delivery],
    width: int,
    *,
    header: bool,
    delimiter: str,
    quote: str,
) -> tuple[str, list[tuple]]:
    """Read files into a temp table in file order, as text columns c0, c1, ... (delivered names
    never meet SQL) and __crm_file, the file's position in `files` (an integer is cheaper to
    group and join than its path on every row); return it and DuckDB's rejected records."""
    read_id = next(READ_ID)
    loaded, errors, scans = f"scan_{read_id}", f"scan_errors_{read_id}", f"scan_files_{read_id}"
    struct = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
    paths = "[" + ", ".join(quote_literal(_literal_path(f.path)) for f in files) + "]"
    # Insertion order is preserved, so rowid runs in file order and numbers the records.
    conn.execute(
        f"""
        CREATE TEMP TABLE {loaded} AS
        SELECT *, CAST(file_index AS BIGINT) AS __crm_file
        FROM read_csv(
            {paths},
            columns = {struct},
            header = {str(header).lower()},
            delim = {quote_literal(delimiter)},
            quote = {quote_literal(quote)},
            escape = {quote_literal(quote)},
            auto_detect = false,
            strict_mode = true,
            null_padding = false,
            store_rejects = true,
            rejects_table = '{errors}',
            rejects_scan = '{scans}'
        )
        """
    )
    rejected = conn.execute(
        f"""
        SELECT s.file_path, e.line, min(e.line_byte_position), min(e.error_type),
               min(e.error_message), min(e.csv_line)
        FROM {errors} AS e
        JOIN {scans} AS s USING (scan_id, file_id)
        GROUP BY s.file_path, e.line
        ORDER BY s.file_path, e.line
        """
    ).fetchall()
    conn.execute(f"DROP TABLE {errors}")
    conn.execute(f"DROP TABLE {scans}")
    return loaded, rejected


def record_rejects(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    files: list[Delivery],
    rejected: list[tuple],
    loaded_at: datetime,
    first_record: int,
) -> str:
    """Quarantine DuckDB's rejected records; return a temp table mapping them for numbering."""
    by_path = {str(f.path): f for f in files}
    index = {str(f.path): i for i, f in enumerate(files)}
    rows = []
    for path, line, byte_pos, error_type, message, csv_line in rejected:
        f = by_path[path]
        reason, hint = _REASONS.get(error_type, (error_type.lower().replace(" ", "_"), message))
        # DuckDB keeps the record's text, all its lines, except where bytes were not UTF-8.
        text = f.line_text(byte_pos, csv_line) if error_type == "INVALID ENCODING" else csv_line
        rows.append(
            (
                f.partition_date,
                f.name,
                line,
                text.rstrip("\r\n"),
                reason,
                f"{f.name} record {line}: {hint} ({message})",
            )
        )
    reject_lines(conn, source, rows, loaded_at)
    table = f"rejected_{next(READ_ID)}"
    conn.execute(f"CREATE TEMP TABLE {table} (file BIGINT, loaded_before BIGINT, k BIGINT)")
    # For the j-th rejected record at number r, r - first_record - j records were loaded
    # before it; an ASOF join turns a loaded record's index back into its record number.
    marks = []
    for path in {r[0] for r in rejected}:
        lines = sorted(r[1] for r in rejected if r[0] == path)
        # Consecutive rejects share a threshold; the last one carries the full count.
        last = {line - first_record - j: j + 1 for j, line in enumerate(lines)}
        marks += [(index[path], before, k) for before, k in last.items()]
    if marks:
        conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", marks)
    return table


def numbered(conn: duckdb.DuckDBPyConnection, loaded: str, marks: str, first_record: int) -> str:
    """SQL for the loaded rows with their record number in the file (header = 1)."""
    # A file's rows are consecutive rowids; its first rowid turns them into an index.
    indexed = f"""
        SELECT {loaded}.*, {loaded}.rowid - bases.base AS __crm_index
        FROM {loaded}
        JOIN (
            SELECT __crm_file, min(rowid) AS base FROM {loaded} GROUP BY ALL
        ) AS bases USING (__crm_file)
    """
    if not conn.execute(f"SELECT count(*) FROM {marks}").fetchone()[0]:
        return f"SELECT *, __crm_index + {first_record} AS __crm_record FROM ({indexed})"
    # Each mark holds from its threshold up to the file's next one: a range join on a few
    # marks per file, where an ASOF join would sort every row with its values.
    return f"""
        WITH indexed AS ({indexed}), spans AS (
            SELECT file, loaded_before, k,
                   lead(loaded_before, 1, 9223372036854775807)
                       OVER (PARTITION BY file ORDER BY loaded_before) AS next_before
            FROM {marks}
        )
        SELECT indexed.*, __crm_index + {first_record} + coalesce(spans.k, 0) AS __crm_record
        FROM indexed
        LEFT JOIN spans
          ON indexed.__crm_file = spans.file
         AND indexed.__crm_index >= spans.loaded_before
         AND indexed.__crm_index < spans.next_before
    """
