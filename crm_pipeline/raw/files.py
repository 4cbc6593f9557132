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
import re
from datetime import datetime

import duckdb

from crm_pipeline.raw.delivery import Delivery, deliveries
from crm_pipeline.raw.scan import numbered, record_rejects, register_files, reject_lines, scan
from crm_pipeline.raw.tables import (
    DELIVERIES_TABLE,
    REJECTS_TABLE,
    accounted_sql,
    line_breaks_sql,
    quote_ident,
    quote_literal,
)
from crm_pipeline.reporting import masked

__all__ = ["Delivery", "deliveries", "load_csv", "load_jsonl"]

# A delimiter that cannot occur in a valid JSON line (control characters must be escaped in
# JSON), so reading JSON Lines "as CSV" yields exactly one column per physical line.
_LINE_DELIMITER = "\x1f"


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


def _reject_whole_file(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    f: Delivery,
    reason: str,
    detail: str,
    loaded_at: datetime,
    header_lines: int,
) -> None:
    lines = f.lines()[header_lines:]
    reject_lines(
        conn,
        source,
        [
            (
                f.partition_date,
                f.name,
                number + header_lines + 1,
                line.decode("utf-8", errors="backslashreplace"),
                reason,
                detail,
            )
            for number, line in enumerate(lines)
        ],
        loaded_at,
    )


def _header_names(delivery: Delivery) -> tuple[str, ...]:
    """The header's column names; an unnamed column (a trailing comma) gets column_<n>."""
    return tuple(name or f"column_{i + 1}" for i, name in enumerate(_header(delivery)))


# The widest CSV read: past it a file is set aside whole (DuckDB reads a file of 20,000 columns
# into more than a GB of memory).
MAX_COLUMNS = 1000
# A header name shown as it is in a message: one word of letters, digits and underscores, or
# several joined by another delimiter than the contract's (a header written with semicolons).
_ONE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:[;|\t][A-Za-z_][A-Za-z0-9_]*)*")


def _shown_names(names: list[str]) -> list[str]:
    """Header names for an operator's message: a name of one word (a column renamed, such as
    nps_score; words joined by a semicolon) as it is, any other by its shape, since a file
    delivered without its header has a record's values in its place (a name, an email)."""
    return [name if _ONE_WORD.fullmatch(name) else masked(name) for name in names]


def _contract_names(header: tuple[str, ...], contract: tuple[str, ...]) -> dict[str, str]:
    """Each contract column found in the header, with its name there: its own, or else the one
    header name that is it in another case or with spaces around it (Store_ID for store_id; a
    column named exactly so wins, the other staying an extra column)."""
    found = {}
    for column in contract:
        loose = [h for h in header if h.strip().lower() == column and h not in contract]
        if column in header or len(loose) == 1:
            found[column] = column if column in header else loose[0]
    return found


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
        if f.blank:
            continue
        if unreadable := f.unreadable():
            _reject_whole_file(conn, table, f, *unreadable, loaded_at, 1)
            continue
        header = _header_names(f)
        if len(header) > MAX_COLUMNS:
            detail = (
                f"{f.name}: the header has {len(header)} columns, more than {MAX_COLUMNS} (a "
                "sheet exported whole?); deliver the contract's columns and re-materialize "
                "its source (a daily file: for its day)"
            )
            _reject_whole_file(conn, table, f, "header_mismatch", detail, loaded_at, 1)
            continue
        missing = [c for c in contract if c not in _contract_names(header, contract)]
        duplicated = sorted({c for c in header if header.count(c) > 1})
        if missing or duplicated:
            unexpected = _shown_names([c for c in header if c not in contract])
            # One column whose name holds semicolons: the names, separated by another delimiter.
            semicolons = len(header) == 1 and ";" in header[0]
            detail = (
                (
                    f"{f.name}: header lacks {missing} (it has {unexpected or 'no other columns'})"
                    if missing
                    else f"{f.name}: header repeats {duplicated}"
                )
                + (
                    "; its values are separated by semicolons: export it separated by commas"
                    if semicolons and missing
                    else ""
                )
                + (
                    "; fix the header and deliver the file again, then re-materialize its source "
                    "(a daily file: for its day)"
                )
            )
            _reject_whole_file(conn, table, f, "header_mismatch", detail, loaded_at, 1)
            continue
        groups.setdefault(header, []).append(f)
    for header, group in groups.items():
        _load_group(conn, table, contract, header, group, loaded_at)
        if len(group) > 1:
            # DuckDB drops the reject of a quoted value left open to the end of a file when it
            # reads that file among others (2.0.1): the file's later records are then in
            # neither table. Read alone, the open record is rejected with all its lines.
            for f in _unaccounted(conn, table, group, loaded_at):
                conn.execute(
                    f"DELETE FROM raw.{table} WHERE source_file = ? AND loaded_at = ?",
                    [f.name, loaded_at],
                )
                conn.execute(
                    f"DELETE FROM {REJECTS_TABLE} "
                    "WHERE source = ? AND source_file = ? AND loaded_at = ?",
                    [table, f.name, loaded_at],
                )
                _load_group(conn, table, contract, header, [f], loaded_at)


def _load_group(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    contract: tuple[str, ...],
    header: tuple[str, ...],
    group: list[Delivery],
    loaded_at: datetime,
) -> None:
    """Append the rows of files sharing a header, read in one scan."""
    loaded, rejected = scan(conn, group, len(header), header=True, delimiter=",", quote='"')
    marks = record_rejects(conn, table, group, rejected, loaded_at, first_record=2)
    position = {name: f"numbered.c{i}" for i, name in enumerate(header)}
    named = _contract_names(header, contract)
    extra = [c for c in header if c not in named.values()]
    extra_sql = (
        "json_object(" + ", ".join(f"{quote_literal(c)}, {position[c]}" for c in extra) + ")"
        if extra
        else "NULL"
    )
    # A flat list, not a chain of additions: a wide header would pass DuckDB's depth limit.
    lines = "1 + list_sum([" + ", ".join(line_breaks_sql(position[c]) for c in header) + "])"
    file_map = register_files(conn, group)
    conn.execute(
        f"""
        INSERT INTO raw.{table}
        SELECT {", ".join(f"{position[named[c]]} AS {quote_ident(c)}" for c in contract)},
               {extra_sql},
               files.__name,
               numbered.__crm_record,
               {lines},
               files.__partition,
               ?
        FROM ({numbered(conn, loaded, marks, 2)}) AS numbered
        JOIN {file_map} AS files ON files.__index = numbered.__crm_file
        """,
        [loaded_at],
    )
    for temp in (loaded, marks, file_map):
        conn.execute(f"DROP TABLE {temp}")


def _unaccounted(
    conn: duckdb.DuckDBPyConnection, table: str, files: list[Delivery], loaded_at: datetime
) -> list[Delivery]:
    """The files of this load whose delivered lines are not all in raw or rejected (the
    rows_accounted check's sum, per file)."""
    delivered = {f.name: max(f.data_lines - 1, 0) for f in files}
    this_load = [loaded_at, list(delivered)]
    found = dict(
        conn.execute(
            f"""
            WITH {accounted_sql(table, "loaded_at = ? AND list_contains(?, source_file)")}
            SELECT source_file, sum(n) FROM (FROM landed UNION ALL FROM rejected) GROUP BY 1
            """,
            [*this_load, table, *this_load],
        ).fetchall()
    )
    return [f for f in files if found.get(f.name, 0) != delivered[f.name]]


def load_jsonl(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    contract: tuple[str, ...],
    files: list[Delivery],
    loaded_at: datetime,
) -> None:
    """Append JSON Lines to raw.<table>; keys outside the contract are kept as JSON."""
    _log_deliveries(conn, table, files, loaded_at, header_lines=0)
    files = [f for f in files if not f.blank]
    readable = []
    for f in files:
        if unreadable := f.unreadable(csv=False):
            _reject_whole_file(conn, table, f, *unreadable, loaded_at, 0)
        else:
            readable.append(f)
    files = readable
    if not files:
        return
    loaded, rejected = scan(conn, files, 1, header=False, delimiter=_LINE_DELIMITER, quote="")
    marks = record_rejects(conn, table, files, rejected, loaded_at, first_record=1)
    file_map = register_files(conn, files)
    lines = f"{loaded}_lines"
    conn.execute(
        f"""
        CREATE TEMP TABLE {lines} AS
        SELECT files.__name AS name, files.__partition AS partition_date,
               numbered.__crm_record AS record_no, numbered.c0 AS line,
               CASE WHEN json_valid(numbered.c0) THEN json_type(numbered.c0) = 'OBJECT'
                    ELSE false END AS is_object
        FROM ({numbered(conn, loaded, marks, 1)}) AS numbered
        JOIN {file_map} AS files ON files.__index = numbered.__crm_file
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
