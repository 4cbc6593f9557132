"""Normalised values, computed once: a cache table in the warehouse, filled in parallel.

Parsing a phone number with phonenumbers costs tens of microseconds, and a million customers
bring more than a million distinct phone spellings. Each distinct delivered value is
normalised once and kept in staging.normalised_values, keyed by the normaliser and a digest
of its code, so a daily run only normalises what it has not seen, and a change to
normalise.py or phones.py recomputes everything. Batches whose reading takes long enough to repay forking
are spread over the machine's cores.
"""

from __future__ import annotations

import hashlib
import inspect
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import duckdb
import pyarrow as pa

from crm_pipeline.raw.tables import quote_literal
from crm_pipeline.staging import normalise, phones

CACHE_TABLE = "staging.normalised_values"
# Values read first in this process, to time the normaliser on this batch.
PROBE_VALUES = 2_000
# What forking the workers and gathering their results costs a large process (a staging step
# holding DuckDB's buffers), in seconds of reading saved: below it, one process reads faster.
FORK_SECONDS = 0.25
# Values read by an earlier version of the normalisers' code are read again.
CODE_DIGEST = hashlib.sha256(
    (inspect.getsource(normalise) + inspect.getsource(phones)).encode()
).hexdigest()[:12]

Normaliser = Callable[[str | None], str | None]


def normaliser_id(fn: Normaliser) -> str:
    return f"{fn.__name__}@{CODE_DIGEST}"


# The work of the pool running now: forked workers inherit it, so the values are not pickled
# to them (for a million values that costs more than a second before any work starts).
_WORK: tuple[Normaliser, list[str]] | None = None


def _apply(start: int, stop: int) -> list[str | None]:
    fn, values = _WORK
    return [fn(v) for v in values[start:stop]]


def normalise_all(
    fn: Normaliser, values: list[str], fork_seconds: float = FORK_SECONDS
) -> list[str | None]:
    """fn over every value, in order: the first few here, timed, and the rest on all cores
    when the time the cores would save is more than `fork_seconds` (an email reads in a
    microsecond or two, a Han name or a phone in tens: a fork repays itself only at scale)."""
    workers = min(os.cpu_count() or 1, 4)
    started = time.perf_counter()
    head = [fn(v) for v in values[:PROBE_VALUES]]
    rest = values[PROBE_VALUES:]
    each = (time.perf_counter() - started) / max(len(head), 1)
    if workers < 2 or each * len(rest) * (1 - 1 / workers) <= fork_seconds:
        return head + [fn(v) for v in rest]
    global _WORK
    size = -(-len(rest) // workers)
    starts = range(0, len(rest), size)
    context = multiprocessing.get_context("fork")
    _WORK = (fn, rest)
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            parts = pool.map(_apply, starts, [start + size for start in starts])
            return head + [v for part in parts for v in part]
    finally:
        _WORK = None


def ensure_cache(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
            normaliser VARCHAR NOT NULL,
            raw VARCHAR NOT NULL,
            value VARCHAR
        )
        """
    )


def _spellings(fn: Normaliser) -> Callable[[str], str] | None:
    """For a normaliser whose values can share a spelling (a phone reader of any regions): SQL
    giving (raw, spelling, exact) for a query of raw values, as phones.phone_spellings_sql."""
    regions = getattr(fn, "phone_regions", None)
    if regions is None:
        return None
    return lambda values: phones.phone_spellings_sql(values, regions)


def _read_in_sql(fn: Normaliser) -> Callable[[duckdb.DuckDBPyConnection, str], str] | None:
    """For a normaliser that reads some values in DuckDB: SQL giving (raw, value) for the values
    of a table (`raw`) it can read, the others left to the normaliser (an international phone
    spelling reads the same whatever the regions)."""
    if getattr(fn, "phone_regions", None) is not None:
        return phones.international_readings_sql
    return {normalise.email: normalise.email_readings_sql}.get(fn)


def fill_cache(
    conn: duckdb.DuckDBPyConnection, fn: Normaliser, distinct_sql: str, params: list
) -> int:
    """Normalise the values of `distinct_sql` (one column, raw) not cached yet; returns how many.

    Values are read once per spelling (_spellings): a spelling already cached, or read now and
    cached as a value of its own, gives its value to every raw value spelled so; a spelling
    that reads differently when its number is not valid leaves those raw values to be read
    themselves. Values or spellings DuckDB can read (_read_in_sql) are read there, all at once.
    """
    name = normaliser_id(fn)
    ensure_cache(conn)
    # Values a previous version of the code normalised are stale.
    conn.execute(
        f"DELETE FROM {CACHE_TABLE} WHERE normaliser LIKE ? AND normaliser <> ?",
        [f"{fn.__name__}@%", name],
    )
    cached = f"(SELECT raw, value FROM {CACHE_TABLE} WHERE normaliser = {quote_literal(name)})"
    unseen = f"SELECT d.raw FROM ({distinct_sql}) AS d ANTI JOIN {cached} AS c USING (raw)"
    spellings = _spellings(fn)
    if spellings is None:
        # Each value is its own spelling: read every unseen value, once.
        if _read_in_sql(fn) is None:
            values = _strings(conn.execute(unseen, params))
            _read(conn, fn, values)
            return len(values)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE unread AS {unseen}", params)
        try:
            (count,) = conn.execute("SELECT count(*) FROM unread").fetchone()
            _read_unread(conn, fn, cached)
        finally:
            conn.execute("DROP TABLE IF EXISTS unread")
        return count
    conn.execute(f"CREATE OR REPLACE TEMP TABLE new_values AS {spellings(unseen)}", params)
    try:
        (count,) = conn.execute("SELECT count(*) FROM new_values").fetchone()
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE unread AS "
            f"SELECT DISTINCT n.spelling AS raw FROM new_values AS n ANTI JOIN {cached} AS c "
            "ON c.raw = n.spelling"
        )
        _read_unread(conn, fn, cached)
        conn.execute(
            f"""
            INSERT INTO {CACHE_TABLE}
            SELECT {quote_literal(name)}, n.raw, c.value
            FROM new_values AS n
            JOIN {cached} AS c ON c.raw = n.spelling
            ANTI JOIN {cached} AS done ON done.raw = n.raw
            WHERE n.exact OR c.value IS NOT NULL
            """
        )
        unsettled = conn.execute(
            f"SELECT n.raw FROM new_values AS n ANTI JOIN {cached} AS c USING (raw)"
        )
        _read(conn, fn, _strings(unsettled))
    finally:
        conn.execute("DROP TABLE IF EXISTS new_values")
        conn.execute("DROP TABLE IF EXISTS unread")
    return count


def _read_unread(conn: duckdb.DuckDBPyConnection, fn: Normaliser, cached: str) -> None:
    """Normalise and cache the values of the temp table `unread` (raw): those DuckDB can read
    (_read_in_sql) there, all at once, the others with `fn`."""
    in_sql = _read_in_sql(fn)
    if in_sql is not None:
        conn.execute(
            f"INSERT INTO {CACHE_TABLE} "
            f"SELECT {quote_literal(normaliser_id(fn))}, raw, value FROM ({in_sql(conn, 'unread')})"
        )
    rest = conn.execute(f"SELECT u.raw FROM unread AS u ANTI JOIN {cached} AS c USING (raw)")
    _read(conn, fn, _strings(rest))


def _strings(result: duckdb.DuckDBPyConnection) -> list[str]:
    """The one text column of a result as a list (through numpy: a third of fetchall's time)."""
    (column,) = result.fetchnumpy().values()
    return column.tolist()


def _read(conn: duckdb.DuckDBPyConnection, fn: Normaliser, values: list[str]) -> None:
    """Normalise `values` and cache them."""
    if not values:
        return
    # As Arrow text: DuckDB reads it as it is, where a frame of Python strings is converted
    # value by value.
    frame = pa.table(
        {
            "raw": pa.array(values, pa.string()),
            "value": pa.array(normalise_all(fn, values), pa.string()),
        }
    )
    conn.register("normalised_frame", frame)
    conn.execute(
        f"INSERT INTO {CACHE_TABLE} SELECT ?, raw, value FROM normalised_frame",
        [normaliser_id(fn)],
    )
    conn.unregister("normalised_frame")
