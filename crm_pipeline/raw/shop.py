"""Loading the online shop's tables into raw through SQLAlchemy, in bulk, losing nothing.

Each row is packed into one JSON array of text values by the source database, fetched in
chunks and unpacked by DuckDB, so Python handles one string per row, never one per value.
Orders and their items are partitioned by the order's day. A row whose day belongs to no
partition (missing, malformed or out of range, such as an order dated years ahead, or an item
whose order does not exist) goes to quarantine.raw_rejects; every load sweeps those anew.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from crm_pipeline.raw.tables import DELIVERIES_TABLE, REJECTS_TABLE, quote_ident, quote_literal

CHUNK_ROWS = 100_000


class ShopSchemaError(Exception):
    """The shop database lacks a table or column of the landing contract."""


@dataclass(frozen=True)
class ShopRead:
    """One shop table to read: its contract columns and whether it is partitioned by day."""

    table: str
    columns: tuple[str, ...]
    partitioned: bool


@dataclass(frozen=True)
class _Part:
    """One select of a load, and whether its rows go to raw or to quarantine."""

    select: sa.Select
    rejected: bool


def _source_columns(engine: sa.Engine, read: ShopRead) -> tuple[list[str], list[str]]:
    """The table's contract columns and extra columns; a clear error if the contract is unmet."""
    inspector = sa.inspect(engine)
    if not inspector.has_table(read.table):
        raise ShopSchemaError(
            f"The online shop database ({engine.url.render_as_string(hide_password=True)}) has "
            f"no table '{read.table}'. Point CRM_SHOP_URL at the shop database or create it."
        )
    present = [c["name"] for c in inspector.get_columns(read.table)]
    missing = [c for c in read.columns if c not in present]
    if missing:
        raise ShopSchemaError(
            f"Shop table '{read.table}' lacks contract columns {missing} (it has {present}). "
            "Rename them in the export or add a view with the contract's names."
        )
    return list(read.columns), [c for c in present if c not in read.columns]


def _day_of(orders: sa.TableClause) -> sa.ColumnElement:
    return sa.func.substr(sa.cast(orders.c.ordered_at, sa.String), 1, 10)


_ORDERS = sa.table("orders", sa.column("order_id"), sa.column("ordered_at"))


def order_days(url: str) -> dict[str | None, int]:
    """Orders per day as the shop database has them (NULL or malformed days included)."""
    engine = sa.create_engine(url)
    _source_columns(engine, ShopRead("orders", ("order_id", "ordered_at"), True))
    day = _day_of(_ORDERS)
    with engine.connect() as db:
        return {d: n for d, n in db.execute(sa.select(day, sa.func.count()).group_by(day))}


Condition = Callable[[sa.TableClause], sa.ColumnElement]


def _row_selects(
    engine: sa.Engine,
    read: ShopRead,
    columns: list[str],
    where: Condition,
    day: Condition | None,
) -> list[sa.Select]:
    """The rows matching `where` as text, with a row id and their day; on SQLite split in two
    halves by rowid, so both cores fetch at once."""
    table = sa.table(read.table, *[sa.column(c) for c in columns])
    values = [table.c[c] for c in columns]
    day_col = (day(table) if day else sa.null()).label("__day")
    if engine.dialect.name != "sqlite":
        row_id = sa.func.row_number().over(order_by=[table.c[c] for c in read.columns[:2]])
        return [sa.select(*values, row_id.label("__row_id"), day_col).where(where(table))]
    row_id = sa.literal_column(f"{read.table}.rowid")
    with engine.connect() as db:
        top = db.execute(sa.select(sa.func.max(row_id)).select_from(table)).scalar() or 0
    base = sa.select(*values, row_id.label("__row_id"), day_col).where(where(table))
    return [base.where(row_id <= top // 2), base.where(row_id > top // 2)]


def _parts(
    engine: sa.Engine,
    read: ShopRead,
    columns: list[str],
    days: list[str] | None,
    valid: list[str],
) -> list[_Part]:
    """The selects of one load: rows for raw, and (partitioned) rows of no partition."""

    def parts(where: Condition, day: Condition | None, rejected: bool) -> list[_Part]:
        return [_Part(s, rejected) for s in _row_selects(engine, read, columns, where, day)]

    if days is None:
        return parts(lambda t: sa.true(), None, False)
    if read.table == "orders":
        return parts(lambda t: _day_of(t).in_(days), _day_of, False) + parts(
            lambda t: sa.or_(_day_of(t).is_(None), _day_of(t).not_in(valid)), _day_of, True
        )

    # Items take their order's day from raw.online_orders in DuckDB: a shop database need
    # have no index to join them with.
    def orders_on(some_days: list[str]) -> sa.Select:
        return sa.select(_ORDERS.c.order_id).where(
            _ORDERS.c.order_id.is_not(None), _day_of(_ORDERS).in_(some_days)
        )

    return parts(lambda t: t.c.order_id.in_(orders_on(days)), None, False) + parts(
        lambda t: sa.or_(t.c.order_id.is_(None), t.c.order_id.not_in(orders_on(valid))),
        None,
        True,
    )


_ROW_AS_JSON = {
    "sqlite": lambda cols: sa.func.json_array(*cols),
    "postgresql": lambda cols: sa.cast(sa.func.json_build_array(*cols), sa.Text),
}


def _row_batches(engine: sa.Engine, select: sa.Select) -> Iterator[list[tuple]]:
    """The select's rows in batches. SQLite is read through the driver's cursor with the
    statement SQLAlchemy compiled: its Result layer would double the cost of every row."""
    if engine.dialect.name == "sqlite":
        compiled = select.compile(engine, compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        cursor = engine.raw_connection().cursor()
        cursor.execute(str(compiled), [params[k] for k in compiled.positiontup or []])
        while rows := cursor.fetchmany(CHUNK_ROWS):
            yield rows
        cursor.close()
        return
    with engine.connect() as db:
        result = db.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(select)
        yield from result.partitions(CHUNK_ROWS)


def _fetch(engine: sa.Engine, part: _Part, names: list[str], out: queue.Queue) -> None:
    """Fetch one select in a thread, putting (part, packed rows or columns) on the queue."""
    try:
        pack = _ROW_AS_JSON.get(engine.dialect.name)
        sub = part.select.subquery()
        if pack is not None:  # JSON renders every value as delivered
            select = sa.select(pack([sub.c[n] for n in names]))
        else:
            select = sa.select(*[sa.cast(sub.c[n], sa.String) for n in names])
        for rows in _row_batches(engine, select):
            if pack is not None:
                out.put((part, pa.table({"r": pa.array([r[0] for r in rows], pa.string())})))
            else:
                cols = list(zip(*rows, strict=True))
                out.put(
                    (part, pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, cols)}))
                )
        out.put((part, None))
    except Exception as error:  # noqa: BLE001 (handed to the loading thread, which raises it)
        out.put((part, error))


def _chunks(
    engine: sa.Engine, parts: list[_Part], names: list[str], conn: duckdb.DuckDBPyConnection
) -> Iterator[tuple[_Part, pa.Table]]:
    """All parts fetched concurrently (the source database does the scanning), unpacked here."""
    out: queue.Queue = queue.Queue(maxsize=4)
    threads = [
        threading.Thread(target=_fetch, args=(engine, p, names, out), daemon=True) for p in parts
    ]
    for t in threads:
        t.start()
    running = len(threads)
    while running:
        part, item = out.get()
        if item is None:
            running -= 1
        elif isinstance(item, Exception):
            raise item
        else:
            yield part, item


def _unpacked(names: list[str], chunk: pa.Table) -> str:
    """SQL reading a fetched chunk (registered as `chunk`) as named text columns."""
    if "r" not in chunk.column_names:
        return "SELECT * FROM chunk"
    # Parse each packed row once into a list of text values, then pick them by position.
    columns = ", ".join(f"v[{i + 1}] AS {quote_ident(n)}" for i, n in enumerate(names))
    return f"SELECT {columns} FROM (SELECT json_transform(r, '[\"VARCHAR\"]') AS v FROM chunk)"


def load_shop_table(
    conn: duckdb.DuckDBPyConnection,
    url: str,
    read: ShopRead,
    *,
    days: list[str] | None,
    valid_days: list[str],
    loaded_at: datetime,
) -> None:
    """Append one shop table (or the given partition days of it) to raw.online_<table>.

    days: the partition days to load (None: the whole table, unpartitioned). valid_days:
    every partition day; rows whose day is not one of them go to quarantine.
    """
    engine = sa.create_engine(url)
    columns, extra = _source_columns(engine, read)
    names = columns + extra + ["__row_id", "__day"]
    source, lineage = f"online_{read.table}", f"shop:{read.table}"
    extra_sql = (
        "json_object(" + ", ".join(f"{quote_literal(c)}, {quote_ident(c)}" for c in extra) + ")"
        if extra
        else "NULL"
    )
    contract_sql = ", ".join(quote_ident(c) for c in read.columns)
    span = f"{valid_days[0]} to {valid_days[-1]}" if valid_days else "none"
    # Rows are staged first, then written in one statement: per-chunk joins would rebuild
    # the join's hash table for every chunk.
    staged = {False: "shop_rows", True: "shop_unplaced"}
    fetched = {False: 0, True: 0}
    for part, chunk in _chunks(
        engine, _parts(engine, read, columns + extra, days, valid_days), names, conn
    ):
        fetched[part.rejected] += chunk.num_rows
        conn.register("chunk", chunk)
        rows = _unpacked(names, chunk)
        conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {staged[part.rejected]} AS {rows} LIMIT 0")
        conn.execute(f"INSERT INTO {staged[part.rejected]} {rows}")
        conn.unregister("chunk")
    day_sql = "CAST(__day AS DATE)"
    if days is not None and read.table != "orders":
        day_sql = """(
            SELECT min(o.partition_date)
            FROM raw.online_orders AS o
            WHERE o.order_id = rows.order_id
              AND o.partition_date BETWEEN ? AND ?
        )"""
    if fetched[False]:
        conn.execute(
            f"""
            INSERT INTO raw.{source}
            SELECT * FROM (
                SELECT {contract_sql}, {extra_sql}, ? AS source_file,
                       CAST(__row_id AS BIGINT), {day_sql} AS day, ?
                FROM shop_rows AS rows
            )
            WHERE day IS NOT NULL OR ?
            """,
            [lineage, *([days[0], days[-1]] if "?" in day_sql else []), loaded_at, days is None],
        )
    if fetched[True]:
        _reject_staged(conn, source, lineage, read, span, loaded_at)
    for table in staged.values():
        conn.execute(f"DROP TABLE IF EXISTS {table}")
    _log_deliveries(conn, source, lineage, days, fetched, loaded_at)


def _log_deliveries(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    lineage: str,
    days: list[str] | None,
    fetched: dict[bool, int],
    loaded_at: datetime,
) -> None:
    """Rows the shop delivered, per day: counted as fetched, before DuckDB wrote them."""
    if days is None:
        conn.execute(
            f"INSERT INTO {DELIVERIES_TABLE} VALUES (?, NULL, ?, ?, ?)",
            [source, lineage, fetched[False], loaded_at],
        )
        return
    landed = dict(
        conn.execute(
            f"SELECT partition_date::VARCHAR, count(*) FROM raw.{source} "
            "WHERE loaded_at = ? GROUP BY ALL",
            [loaded_at],
        ).fetchall()
    )
    if sum(landed.values()) != fetched[False]:
        raise RuntimeError(
            f"raw.{source}: fetched {fetched[False]} rows from {lineage} but wrote "
            f"{sum(landed.values())}; nothing was kept. For order items, materialize "
            "raw/online_orders for the same days first (items take their order's day)."
        )
    conn.executemany(
        f"INSERT INTO {DELIVERIES_TABLE} VALUES (?, ?, ?, ?, ?)",
        [(source, d, lineage, landed.get(d, 0), loaded_at) for d in days],
    )
    conn.execute(
        f"INSERT INTO {DELIVERIES_TABLE} VALUES (?, NULL, ?, ?, ?)",
        [source, lineage, fetched[True], loaded_at],
    )


def _reject_staged(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    lineage: str,
    read: ShopRead,
    span: str,
    loaded_at: datetime,
) -> None:
    what = "ordered_at" if read.table == "orders" else "its order's ordered_at"
    record = ", ".join(f"{quote_ident(c)} := {quote_ident(c)}" for c in read.columns)
    conn.execute(
        f"""
        INSERT INTO {REJECTS_TABLE}
        SELECT ?, NULL, ?, CAST(__row_id AS BIGINT),
               to_json(struct_pack({record}))::VARCHAR,
               'no_partition',
               ? || ' row ' || __row_id || ': ' || ? || ' is '
                 || coalesce('''' || __day || '''', 'missing or unknown')
                 || ', not a day of any partition (' || ? || '); correct it in the shop database',
               ?
        FROM shop_unplaced
        """,
        [source, lineage, lineage, what, span, loaded_at],
    )
