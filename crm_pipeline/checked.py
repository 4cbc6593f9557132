"""What a table's contract check has already passed, so a run that writes part of a table can
check only the rows it wrote.

After a check passes, the table's comment records the contract (a digest of the pandera model,
the pandera version and this project's own checks) and the latest load time of its rows. A
later check under the same contract then needs only the rows loaded after that time, the
rows every write of the table stamps with its own load time. Whatever could let an unchecked
row stand clears the record or leaves none: a failed check clears it (the rows it failed on
stay in the table until a write replaces them), a table written whole (CREATE OR REPLACE) has
no comment, and a changed contract or pandera has another digest. So a run checks every row
again after any of those.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from pathlib import Path

import duckdb
import pandera
import pandera.pandas as pa

LOAD_TIME = "loaded_at"
_OWN_CHECKS = Path(__file__).with_name("checks.py")
_RECORD = re.compile(r"^Contract ([0-9a-f]{16}) held for every row loaded up to (\S+)$")


def contract_digest(model: type[pa.DataFrameModel]) -> str:
    """A digest of everything that decides whether a row satisfies the model: each column's
    type, nullability and checks with their parameters, the table-wide settings and checks,
    the pandera version and the source of the checks this project registers."""
    schema = model.to_schema()
    parts = [f"strict={schema.strict} coerce={schema.coerce} {pandera.__version__}"]
    for name, column in schema.columns.items():
        checks = [(check.name, sorted(check.statistics.items())) for check in column.checks]
        parts.append(
            f"{name}|{column.dtype}|{column.nullable}|{column.unique}|{column.coerce}|{checks}"
        )
    parts += [f"{check.name}|{sorted(check.statistics.items())}" for check in schema.checks]
    parts.append(_OWN_CHECKS.read_text())
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _comment(conn: duckdb.DuckDBPyConnection, table: str) -> str | None:
    schema, name = table.split(".")
    found = conn.execute(
        "SELECT comment FROM duckdb_tables() WHERE schema_name = ? AND table_name = ?",
        [schema, name],
    ).fetchall()
    return found[0][0] if found else None


def checked_through(
    conn: duckdb.DuckDBPyConnection, table: str, model: type[pa.DataFrameModel]
) -> datetime | None:
    """The load time up to which every row of `table` passed `model`'s check, or None when
    every row must be checked."""
    record = _RECORD.match(_comment(conn, table) or "")
    if record is None or record.group(1) != contract_digest(model):
        return None
    return datetime.fromisoformat(record.group(2))


def record_check(
    conn: duckdb.DuckDBPyConnection, table: str, model: type[pa.DataFrameModel], passed: bool
) -> None:
    """Record that every row of `table` passed `model` (its latest load time), or, after a
    failure, that none is known to have."""
    latest = conn.execute(f"SELECT max({LOAD_TIME}) FROM {table}").fetchall()[0][0]
    if passed and latest is not None:
        record = f"Contract {contract_digest(model)} held for every row loaded up to {latest.isoformat()}"
        conn.execute(f"COMMENT ON TABLE {table} IS '{record}'")
    else:
        conn.execute(f"COMMENT ON TABLE {table} IS NULL")
