"""Fetching a shop table (or the rows a filter keeps) into a DuckDB temp table of text
columns, in bulk.

The source database packs every row into one JSON array of its values, so Python handles one
string per row, never one per value; DuckDB parses them. SQLite produces rows on one core per
connection, so a large SQLite table is read in two halves by two worker processes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from crm_pipeline.raw.tables import quote_ident

CHUNK_ROWS = 100_000
ROW_ID = "__crm_row_id"


# Below this many rows, starting worker processes costs more than it saves.
PARALLEL_MIN_ROWS = 400_000


def _selects(
    engine: sa.Engine,
    table: str,
    values: list[sa.ColumnElement],
    where: sa.ColumnElement[bool] | None = None,
) -> list[sa.Select]:
    """The table's rows (those matching `where`, when given) as one JSON array per row (or
    text columns), with a row id, the same one whatever `where` keeps; a large SQLite table in
    two halves by rowid, one per core."""
    source = sa.table(table)
    kept = sa.true() if where is None else where
    # A view has no rowid; it is read in one pass, numbered by its first two columns.
    if engine.dialect.name == "sqlite" and table not in sa.inspect(engine).get_view_names():
        row_id = sa.literal_column(f"{table}.rowid")
        base = sa.select(sa.func.json_array(*values, row_id)).select_from(source).where(kept)
        with engine.connect() as db:
            top = db.execute(sa.select(sa.func.max(row_id)).select_from(source)).scalar() or 0
        if top < PARALLEL_MIN_ROWS:
            return [base]
        return [base.where(row_id <= top // 2), base.where(row_id > top // 2)]
    row_id = sa.func.row_number().over(order_by=values[:2])
    if engine.dialect.name == "sqlite":
        selects = [sa.select(sa.func.json_array(*values, row_id))]
    elif engine.dialect.name == "postgresql":
        # Text casts keep PostgreSQL's own rendering of each value (JSON would reformat times).
        texts = [sa.cast(v, sa.Text) for v in [*values, row_id]]
        selects = [sa.select(sa.cast(sa.func.json_build_array(*texts), sa.Text))]
    else:
        selects = [sa.select(*[sa.cast(v, sa.String) for v in [*values, row_id]])]
    if where is None:
        return [s.select_from(source) for s in selects]
    # Numbered over the whole table, then filtered: row ids do not depend on the filter.
    numbered = selects[0].add_columns(kept.label("__crm_kept")).select_from(source).subquery()
    return [sa.select(*list(numbered.c)[:-1]).where(numbered.c["__crm_kept"])]


def _sqlite_batches(url: str, sql: str, params: list) -> Iterator[list[tuple]]:
    """Rows through the driver's cursor, with the statement SQLAlchemy compiled: its Result
    layer would double the cost of every row."""
    cursor = sa.create_engine(url).raw_connection().cursor()
    cursor.execute(sql, params)
    while rows := cursor.fetchmany(CHUNK_ROWS):
        yield rows
    cursor.close()


def _packed(rows: list[tuple]) -> pa.Table:
    return pa.table({"r": pa.array([r[0] for r in rows], pa.string())})


def dump_packed_rows(url: str, sql: str, params: list, path: str) -> int:
    """Write a SQLite select of packed rows to a Parquet file (run in a worker process)."""
    writer, count = None, 0
    for rows in _sqlite_batches(url, sql, params):
        table = _packed(rows)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="none")
        writer.write_table(table)
        count += len(rows)
    if writer is not None:
        writer.close()
    return count


def _dump_in_workers(url: str, statements: list[tuple[str, list]], folder: Path) -> list[str]:
    """Run each statement in its own Python process (SQLite produces rows on one core per
    connection, and Python's lock would serialise threads); returns the Parquet files."""
    workers = []
    for i, (sql, params) in enumerate(statements):
        path = folder / f"part{i}.parquet"
        job = json.dumps({"url": url, "sql": sql, "params": params, "path": str(path)})
        worker = subprocess.Popen(
            [sys.executable, "-m", "crm_pipeline.raw.shop_fetch"], stdin=subprocess.PIPE, text=True
        )
        worker.stdin.write(job)
        worker.stdin.close()
        workers.append((worker, path))
    for worker, _ in workers:
        if worker.wait() != 0:
            raise RuntimeError(f"A shop reader process failed (exit {worker.returncode}).")
    return [str(path) for _, path in workers if path.exists()]


def _batches(engine: sa.Engine, select: sa.Select) -> Iterator[pa.Table]:
    """One select's rows as Arrow tables: one packed column, or text columns c0, c1, ..."""
    if engine.dialect.name == "sqlite":
        sql, params = _compiled(engine, select)
        url = engine.url.render_as_string(hide_password=False)
        yield from map(_packed, _sqlite_batches(url, sql, params))
        return
    with engine.connect() as db:
        result = db.execution_options(stream_results=True, yield_per=CHUNK_ROWS)
        for rows in result.execute(select).partitions(CHUNK_ROWS):
            if len(rows[0]) == 1:
                yield _packed(rows)
            else:
                columns = list(zip(*rows, strict=True))
                yield pa.table({f"c{i}": pa.array(c, pa.string()) for i, c in enumerate(columns)})


def _compiled(engine: sa.Engine, select: sa.Select) -> tuple[str, list]:
    # IN lists rendered as one parameter per value, so the statement runs as it is.
    compiled = select.compile(engine, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    return str(compiled), [params[k] for k in compiled.positiontup or []]


def stage(
    conn: duckdb.DuckDBPyConnection,
    engine: sa.Engine,
    table: str,
    names: list[str],
    target: str,
    where: sa.ColumnElement[bool] | None = None,
) -> None:
    """Copy a shop table (its rows matching `where`, when given) into a DuckDB temp table of
    text columns."""
    all_names = [*names, ROW_ID]
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {target} ("
        + ", ".join(f"{quote_ident(n)} VARCHAR" for n in all_names)
        + ")"
    )
    # A packed row is parsed once into a list of text values, then picked by position.
    packed = ", ".join(f"v[{i + 1}] AS {quote_ident(n)}" for i, n in enumerate(all_names))
    unpack = f"SELECT {packed} FROM (SELECT json_transform(r, '[\"VARCHAR\"]') AS v FROM SOURCE)"
    plain = ", ".join(f"c{i} AS {quote_ident(n)}" for i, n in enumerate(all_names))
    selects = _selects(engine, table, [sa.column(n) for n in names], where)
    if len(selects) > 1:
        url = engine.url.render_as_string(hide_password=False)
        with tempfile.TemporaryDirectory() as folder:
            statements = [_compiled(engine, s) for s in selects]
            written = _dump_in_workers(url, statements, Path(folder))
            if written:
                conn.execute(
                    f"INSERT INTO {target} " + unpack.replace("SOURCE", "read_parquet(?)"),
                    [written],
                )
        return
    for chunk in _batches(engine, selects[0]):
        conn.register("chunk", chunk)
        rows = (
            unpack.replace("SOURCE", "chunk")
            if "r" in chunk.column_names
            else f"SELECT {plain} FROM chunk"
        )
        conn.execute(f"INSERT INTO {target} {rows}")
        conn.unregister("chunk")


if __name__ == "__main__":
    job = json.load(sys.stdin)
    dump_packed_rows(job["url"], job["sql"], job["params"], job["path"])
