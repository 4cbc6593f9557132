"""What a table's contract check has already passed, so a run that writes part of a table can
check only the rows it wrote.

After a check passes, the table's comment records the contract (a digest of everything that
decides whether a row satisfies it) and the latest load time of its rows. A later check under
the same contract then needs only the rows loaded after that time: every write of the table
stamps the rows it writes with its own load time. A write takes the record away in its own
transaction and a passing check puts it back, so whatever could let an unchecked row stand
leaves no record, and the next check reads every row: a failed check (its rows stay until a
write replaces them), a run that stops between its write and its check, a table written whole
(CREATE OR REPLACE), another contract or library version. Rules are per row already: a
contract is checked in batches (contracts.validate_query). A hand edit of a row that leaves
its load time alone is not checked again until the table is written whole or the contract
changes.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from datetime import datetime
from importlib import metadata
from pathlib import Path

import duckdb
import pandera.pandas as pa

LOAD_TIME = "loaded_at"
_HERE = Path(__file__).parent
# How rows reach pandera and the checks this project registers decide validity too.
_OWN_CODE = ("checks.py", "contracts.py")
_LIBRARIES = ("pandera", "pandas", "numpy", "pyarrow", "duckdb")
_RECORD = re.compile(r"^Contract ([0-9a-f]{16}) held for every row loaded up to (\S+)$")


def _rules(checks: list) -> list[tuple]:
    return [
        (c.name, sorted(c.statistics.items()), c.ignore_na, c.raise_warning, c.element_wise)
        for c in checks
    ]


def contract_digest(model: type[pa.DataFrameModel]) -> str:
    """A digest of what decides whether a row satisfies the model: each column's type,
    nullability and checks with their options, the table-wide settings and checks, the source
    of the model's module and of this project's validation code, and the libraries' versions."""
    schema = model.to_schema()
    parts = [
        repr(
            (
                schema.strict,
                schema.coerce,
                schema.ordered,
                schema.unique,
                str(schema.dtype),
                schema.drop_invalid_rows,
                schema.add_missing_columns,
                schema.unique_column_names,
                _rules(schema.checks),
            )
        )
    ]
    for name, column in schema.columns.items():
        parts.append(
            repr(
                (
                    name,
                    str(column.dtype),
                    column.nullable,
                    column.unique,
                    column.coerce,
                    column.required,
                    column.regex,
                    _rules(column.checks),
                )
            )
        )
    parts += [metadata.version(library) for library in _LIBRARIES]
    sources = {Path(inspect.getsourcefile(model))} | {_HERE / name for name in _OWN_CODE}
    parts += [path.read_text() for path in sorted(sources)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _comment(conn: duckdb.DuckDBPyConnection, table: str) -> tuple[bool, str | None]:
    """Whether the table exists in the warehouse, and its comment."""
    schema, name = table.split(".")
    found = conn.execute(
        "SELECT comment FROM duckdb_tables() "
        "WHERE database_name = current_database() AND schema_name = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    return bool(found), (found[0][0] if found else None)


def take_record(
    conn: duckdb.DuckDBPyConnection, table: str, model: type[pa.DataFrameModel]
) -> datetime | None:
    """Before a write, in its transaction: the load time up to which every row of `table`
    passed `model`'s check (None: every row must be checked), and the record cleared."""
    exists, comment = _comment(conn, table)
    if exists:
        conn.execute(f"COMMENT ON TABLE {table} IS NULL")
    record = _RECORD.match(comment or "")
    if record is None or record.group(1) != contract_digest(model):
        return None
    return datetime.fromisoformat(record.group(2))


def record_check(
    conn: duckdb.DuckDBPyConnection, table: str, model: type[pa.DataFrameModel], passed: bool
) -> None:
    """After a check of `table` against `model`: when it passed, record that every row did (up
    to their latest load time); otherwise leave no record."""
    latest = conn.execute(f"SELECT max({LOAD_TIME}) FROM {table}").fetchall()[0][0]
    if passed and latest is not None:
        digest = contract_digest(model)
        record = f"Contract {digest} held for every row loaded up to {latest.isoformat()}"
        conn.execute(f"COMMENT ON TABLE {table} IS '{record}'")
    else:
        conn.execute(f"COMMENT ON TABLE {table} IS NULL")
