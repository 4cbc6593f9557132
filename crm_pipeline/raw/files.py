"""Loading delivered files (CSV and JSON Lines) into raw tables with DuckDB, losing nothing.

Every value is read as text with the columns the file's own header names, never sniffed. What
DuckDB cannot parse (a cut-off line, bytes that are not UTF-8, a wrong column count, a line of
JSON that does not parse) goes to quarantine.raw_rejects with the file, the record number, the
raw bytes (undecodable ones escaped) and the reason. A file whose header lacks a contract
column cannot be mapped safely, so all its lines go to quarantine, naming the missing columns.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from itertools import count
from pathlib import Path

import duckdb

from crm_pipeline.raw.tables import (
    DELIVERIES_TABLE,
    REJECTS_TABLE,
    line_breaks_sql,
    quote_ident,
    quote_literal,
)

_READ_ID = count()
# A delimiter that cannot occur in a valid JSON line (control characters must be escaped in
# JSON), so reading JSON Lines "as CSV" yields exactly one column per physical line.
_LINE_DELIMITER = "\x1f"


@dataclass(frozen=True)
class Delivery:
    """One delivered file: where it is, its name as recorded in lineage, and its partition."""

    path: Path
    name: str
    partition_date: str | None
    content: bytes

    @property
    def data_lines(self) -> int:
        """Non-empty physical lines, excluding the CSV header (the count conservation uses)."""
        return sum(1 for line in self.content.split(b"\n") if line.strip(b"\r"))

    def line_text(self, byte_offset: int, shown: str) -> str:
        """The line of a record DuckDB could not decode, undecodable bytes escaped.

        DuckDB's byte position points at the line's start, at the character after it, or at
        a blank line before it, depending on line endings; the candidate that starts like
        what DuckDB shows (it prints undecodable bytes as '?') is the one.
        """
        wanted = shown.rstrip("\r\n").lstrip("\r\n")
        candidates = []
        for offset in (byte_offset - 1, byte_offset):
            start = self.content.rfind(b"\n", 0, max(offset, 0)) + 1
            while start < len(self.content) and not self._line_from(start).strip():
                start = self.content.find(b"\n", start) + 1 or len(self.content)
            candidates.append(self._line_from(start))
        prefix = wanted.split("?")[0]
        for raw in candidates:
            if raw.decode("utf-8", errors="replace").startswith(prefix):
                return raw.decode("utf-8", errors="backslashreplace")
        return candidates[0].decode("utf-8", errors="backslashreplace")

    def _line_from(self, start: int) -> bytes:
        end = self.content.find(b"\n", start)
        return self.content[start : end if end >= 0 else len(self.content)].rstrip(b"\r")


def deliveries(paths: list[tuple[Path, str, str | None]]) -> list[Delivery]:
    """Read each file once; the bytes serve the header, the line count and reject texts."""
    return [Delivery(p, name, day, p.read_bytes()) for p, name, day in paths]


def _header(delivery: Delivery) -> tuple[str, ...]:
    first = delivery.content.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace")
    return tuple(name.strip() for name in next(csv.reader(io.StringIO(first)), []))


def _log_deliveries(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    files: list[Delivery],
    loaded_at: datetime,
    header_lines: int,
) -> None:
    rows = [
        (source, f.partition_date, f.name, max(f.data_lines - header_lines, 0), loaded_at)
        for f in files
    ]
    if rows:
        conn.executemany(f"INSERT INTO {DELIVERIES_TABLE} VALUES (?, ?, ?, ?, ?)", rows)


def _register_files(conn: duckdb.DuckDBPyConnection, files: list[Delivery]) -> str:
    name = f"files_{next(_READ_ID)}"
    conn.execute(f"CREATE TEMP TABLE {name} (__path VARCHAR, __name VARCHAR, __partition DATE)")
    conn.executemany(
        f"INSERT INTO {name} VALUES (?, ?, ?)",
        [(str(f.path), f.name, f.partition_date) for f in files],
    )
    return name


def _reject_lines(
    conn: duckdb.DuckDBPyConnection, source: str, rows: list[tuple], loaded_at: datetime
) -> None:
    """rows: (partition_date, file name, record number, raw text, reason, detail)."""
    if rows:
        conn.executemany(
            f"INSERT INTO {REJECTS_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(source, *row, loaded_at) for row in rows],
        )


def _reject_whole_file(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    f: Delivery,
    reason: str,
    detail: str,
    loaded_at: datetime,
    header_lines: int,
) -> None:
    lines = [line for line in f.content.split(b"\n") if line.strip(b"\r")][header_lines:]
    _reject_lines(
        conn,
        source,
        [
            (
                f.partition_date,
                f.name,
                number + header_lines + 1,
                line.rstrip(b"\r").decode("utf-8", errors="backslashreplace"),
                reason,
                detail,
            )
            for number, line in enumerate(lines)
        ],
        loaded_at,
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


def _scan(
    conn: duckdb.DuckDBPyConnection,
    files: list[Delivery],
    width: int,
    *,
    header: bool,
    delimiter: str,
    quote: str,
) -> tuple[str, list[tuple]]:
    """Read files into a temp table in file order, as text columns c0, c1, ... (delivered names
    never meet SQL); return it and DuckDB's rejected records."""
    read_id = next(_READ_ID)
    loaded, errors, scans = f"scan_{read_id}", f"scan_errors_{read_id}", f"scan_files_{read_id}"
    struct = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(width)) + "}"
    paths = "[" + ", ".join(quote_literal(_literal_path(f.path)) for f in files) + "]"
    # Insertion order is preserved, so rowid runs in file order and numbers the records.
    conn.execute(
        f"""
        CREATE TEMP TABLE {loaded} AS
        SELECT *
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
            filename = '__crm_file',
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


def _record_rejects(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    files: list[Delivery],
    rejected: list[tuple],
    loaded_at: datetime,
    first_record: int,
) -> str:
    """Quarantine DuckDB's rejected records; return a temp table mapping them for numbering."""
    by_path = {str(f.path): f for f in files}
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
    _reject_lines(conn, source, rows, loaded_at)
    table = f"rejected_{next(_READ_ID)}"
    conn.execute(f"CREATE TEMP TABLE {table} (path VARCHAR, loaded_before BIGINT, k BIGINT)")
    # For the j-th rejected record at number r, r - first_record - j records were loaded
    # before it; an ASOF join turns a loaded record's index back into its record number.
    marks = []
    for path in {r[0] for r in rejected}:
        lines = sorted(r[1] for r in rejected if r[0] == path)
        # Consecutive rejects share a threshold; the last one carries the full count.
        last = {line - first_record - j: j + 1 for j, line in enumerate(lines)}
        marks += [(path, before, k) for before, k in last.items()]
    if marks:
        conn.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", marks)
    return table


def _numbered(conn: duckdb.DuckDBPyConnection, loaded: str, marks: str, first_record: int) -> str:
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
    return f"""
        WITH indexed AS ({indexed})
        SELECT indexed.*, __crm_index + {first_record} + coalesce(marks.k, 0) AS __crm_record
        FROM indexed
        ASOF LEFT JOIN {marks} AS marks
          ON indexed.__crm_file = marks.path
         AND indexed.__crm_index >= marks.loaded_before
    """


def _header_names(delivery: Delivery) -> tuple[str, ...]:
    """The header's column names; an unnamed column (a trailing comma) gets column_<n>."""
    return tuple(name or f"column_{i + 1}" for i, name in enumerate(_header(delivery)))


def load_csv(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    contract: tuple[str, ...],
    files: list[Delivery],
    loaded_at: datetime,
) -> None:
    """Append the files' rows to raw.<table>; contract columns as text, the rest kept as JSON."""
    _log_deliveries(conn, table, files, loaded_at, header_lines=1)
    groups: dict[tuple[str, ...], list[Delivery]] = {}
    for f in files:
        if not f.content.strip():
            continue
        header = _header_names(f)
        missing = [c for c in contract if c not in header]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if missing or duplicated:
            unexpected = [c for c in header if c not in contract]
            detail = (
                f"{f.name}: header lacks {missing} (it has {unexpected or 'no other columns'})"
                if missing
                else f"{f.name}: header repeats {duplicated}"
            ) + "; fix the header and deliver the file again, then re-run this partition"
            _reject_whole_file(conn, table, f, "header_mismatch", detail, loaded_at, 1)
            continue
        groups.setdefault(header, []).append(f)
    for header, group in groups.items():
        loaded, rejected = _scan(conn, group, len(header), header=True, delimiter=",", quote='"')
        marks = _record_rejects(conn, table, group, rejected, loaded_at, first_record=2)
        position = {name: f"numbered.c{i}" for i, name in enumerate(header)}
        extra = [c for c in header if c not in contract]
        extra_sql = (
            "json_object(" + ", ".join(f"{quote_literal(c)}, {position[c]}" for c in extra) + ")"
            if extra
            else "NULL"
        )
        lines = " + ".join(["1", *(line_breaks_sql(position[c]) for c in header)])
        file_map = _register_files(conn, group)
        conn.execute(
            f"""
            INSERT INTO raw.{table}
            SELECT {", ".join(f"{position[c]} AS {quote_ident(c)}" for c in contract)},
                   {extra_sql},
                   files.__name,
                   numbered.__crm_record,
                   {lines},
                   files.__partition,
                   ?
            FROM ({_numbered(conn, loaded, marks, 2)}) AS numbered
            JOIN {file_map} AS files ON files.__path = numbered.__crm_file
            """,
            [loaded_at],
        )
        for temp in (loaded, marks, file_map):
            conn.execute(f"DROP TABLE {temp}")


def load_jsonl(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    contract: tuple[str, ...],
    files: list[Delivery],
    loaded_at: datetime,
) -> None:
    """Append JSON Lines to raw.<table>; keys outside the contract are kept as JSON."""
    _log_deliveries(conn, table, files, loaded_at, header_lines=0)
    files = [f for f in files if f.content.strip()]
    if not files:
        return
    loaded, rejected = _scan(conn, files, 1, header=False, delimiter=_LINE_DELIMITER, quote="")
    marks = _record_rejects(conn, table, files, rejected, loaded_at, first_record=1)
    file_map = _register_files(conn, files)
    lines = f"{loaded}_lines"
    conn.execute(
        f"""
        CREATE TEMP TABLE {lines} AS
        SELECT files.__name AS name, files.__partition AS partition_date,
               numbered.__crm_record AS record_no, numbered.c0 AS line,
               CASE WHEN json_valid(numbered.c0) THEN json_type(numbered.c0) = 'OBJECT'
                    ELSE false END AS is_object
        FROM ({_numbered(conn, loaded, marks, 1)}) AS numbered
        JOIN {file_map} AS files ON files.__path = numbered.__crm_file
        """
    )
    # An empty line reads as NULL and is no record; a line of blanks is a record, and wrong.
    conn.execute(
        f"""
        INSERT INTO {REJECTS_TABLE}
        SELECT ?, partition_date, name, record_no, line, 'invalid_json',
               name || ' line ' || record_no
                   || ': not a JSON object (cut off or malformed); fix or re-deliver the file',
               ?
        FROM {lines}
        WHERE NOT is_object
          AND line IS NOT NULL
        """,
        [table, loaded_at],
    )
    drop_contract = "{" + ", ".join(f'"{c}": null' for c in contract) + "}"
    conn.execute(
        f"""
        INSERT INTO raw.{table}
        SELECT {", ".join(f"line ->> {quote_literal('$.' + quote_ident(c))}" for c in contract)},
               nullif(json_merge_patch(line, {quote_literal(drop_contract)}), '{{}}'),
               name,
               record_no,
               1,
               partition_date,
               ?
        FROM {lines}
        WHERE is_object
        """,
        [loaded_at],
    )
    for temp in (loaded, lines, marks, file_map):
        conn.execute(f"DROP TABLE {temp}")
