"""Loading the online shop's tables into raw through SQLAlchemy, in bulk, losing nothing.

Values are cast to text in the source database and streamed in chunks as Arrow tables into
DuckDB. Orders and their items are partitioned by the order's day. A row whose day belongs to
no partition (missing, malformed or out of range, such as an order dated years ahead) cannot be
placed in any partition, so every load sweeps those rows into quarantine.raw_rejects anew.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import duckdb
import pyarrow as pa
import sqlalchemy as sa

from crm_pipeline.raw.tables import DELIVERIES_TABLE, REJECTS_TABLE, quote_ident, quote_literal

CHUNK_ROWS = 200_000


class ShopSchemaError(Exception):
    """The shop database lacks a table or column of the landing contract."""


@dataclass(frozen=True)
class ShopRead:
    """How to read one shop table: its contract columns and, if partitioned, its day expression."""

    table: str
    columns: tuple[str, ...]
    partitioned: bool


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)


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


def _day_of_order(orders: sa.TableClause) -> sa.ColumnElement:
    return sa.func.substr(sa.cast(orders.c.ordered_at, sa.String), 1, 10)


def _select(
    engine: sa.Engine, read: ShopRead, columns: list[str]
) -> tuple[sa.Select, sa.ColumnElement | None]:
    """The read of one table as text columns, with a row id and the partition day."""
    table = sa.table(read.table, *[sa.column(c) for c in columns])
    if engine.dialect.name == "sqlite":
        row_id = sa.literal_column(f"{read.table}.rowid")
    else:
        row_id = sa.func.row_number().over(order_by=[table.c[c] for c in read.columns[:2]])
    row_id = sa.cast(row_id, sa.String)
    texts = [sa.cast(table.c[c], sa.String).label(c) for c in columns]
    if not read.partitioned:
        return sa.select(*texts, row_id.label("__row_id"), sa.null().label("__day")), None
    if read.table == "orders":
        day = _day_of_order(table)
        return sa.select(*texts, row_id.label("__row_id"), day.label("__day")), day
    orders = sa.table("orders", sa.column("order_id"), sa.column("ordered_at"))
    days = (
        sa.select(orders.c.order_id, sa.func.min(_day_of_order(orders)).label("day"))
        .group_by(orders.c.order_id)
        .subquery()
    )
    stmt = sa.select(*texts, row_id.label("__row_id"), days.c.day.label("__day")).select_from(
        table.outerjoin(days, days.c.order_id == table.c.order_id)
    )
    return stmt, days.c.day


# Dialects that can pack a row into one JSON array: Python then handles one string per row
# instead of one object per value, which is what makes a bulk read through SQLAlchemy fast.
_ROW_AS_JSON = {
    "sqlite": lambda cols: sa.func.json_array(*cols),
    "postgresql": lambda cols: sa.cast(sa.func.json_build_array(*cols), sa.Text),
}


def _chunks(
    engine: sa.Engine, stmt: sa.Select, names: list[str], conn: duckdb.DuckDBPyConnection
) -> Iterator[pa.Table]:
    """Stream a select as Arrow tables of text columns, CHUNK_ROWS rows at a time."""
    pack = _ROW_AS_JSON.get(engine.dialect.name)
    if pack is not None:
        sub = stmt.subquery()
        stmt = sa.select(pack([sub.c[n] for n in names]))
        unpack = ", ".join(f"packed.r ->> {i} AS {quote_ident(n)}" for i, n in enumerate(names))
    with engine.connect() as db:
        result = db.execution_options(stream_results=True, yield_per=CHUNK_ROWS).execute(stmt)
        for rows in result.partitions(CHUNK_ROWS):
            if pack is None:
                columns = list(zip(*rows, strict=True)) if rows else [[] for _ in names]
                yield pa.table({n: pa.array(c, type=pa.string()) for n, c in zip(names, columns)})
                continue
            conn.register("packed", pa.table({"r": pa.array([r[0] for r in rows], pa.string())}))
            yield conn.sql(f"SELECT {unpack} FROM packed").to_arrow_table()
            conn.unregister("packed")


def day_counts(url: str, read: ShopRead) -> dict[str | None, int]:
    """Rows per partition day as the shop database has them (the source side of conservation)."""
    engine = _engine(url)
    columns, _ = _source_columns(engine, read)
    stmt, _ = _select(engine, read, columns)
    sub = stmt.subquery()
    query = sa.select(sub.c.__day, sa.func.count()).group_by(sub.c.__day)
    with engine.connect() as conn:
        return {d: n for d, n in conn.execute(query)}


def load_shop_table(
    conn: duckdb.DuckDBPyConnection,
    url: str,
    read: ShopRead,
    *,
    days: list[str] | None,
    unplaceable: list[str | None],
    counts: dict[str | None, int],
    loaded_at: datetime,
    partition_range: str,
) -> None:
    """Append one shop table (or the given partition days of it) to raw.<source>.

    days: the partition days to load (None: the whole table). unplaceable: day values that
    belong to no partition; their rows go to quarantine. counts: source rows per day.
    """
    engine = _engine(url)
    columns, extra = _source_columns(engine, read)
    names = columns + extra + ["__row_id", "__day"]
    stmt, day = _select(engine, read, columns + extra)
    source = f"online_{read.table}"
    lineage = f"shop:{read.table}"
    extra_sql = (
        "json_object(" + ", ".join(f"{quote_literal(c)}, {quote_ident(c)}" for c in extra) + ")"
        if extra
        else "NULL"
    )
    contract_sql = ", ".join(quote_ident(c) for c in read.columns)
    if days is None:
        conn.execute(
            f"INSERT INTO {DELIVERIES_TABLE} VALUES (?, NULL, ?, ?, ?)",
            [source, lineage, sum(counts.values()), loaded_at],
        )
        reads = [(stmt, False)]
    else:
        conn.executemany(
            f"INSERT INTO {DELIVERIES_TABLE} VALUES (?, ?, ?, ?, ?)",
            [(source, d, lineage, counts.get(d, 0), loaded_at) for d in days],
        )
        reads = [(stmt.where(day.in_(days)), False)] if days else []
        bad_days = [d for d in unplaceable if d is not None]
        if unplaceable:
            conn.execute(
                f"INSERT INTO {DELIVERIES_TABLE} VALUES (?, NULL, ?, ?, ?)",
                [source, lineage, sum(counts.get(d, 0) for d in unplaceable), loaded_at],
            )
            sweep = day.in_(bad_days) if bad_days else sa.false()
            if None in unplaceable:
                sweep = sa.or_(sweep, day.is_(None))
            reads.append((stmt.where(sweep), True))
    for query, rejected in reads:
        for chunk in _chunks(engine, query, names, conn):
            conn.register("chunk", chunk)
            if rejected:
                _reject_chunk(conn, source, lineage, read, partition_range, loaded_at)
                conn.unregister("chunk")
                continue
            conn.execute(
                f"""
                INSERT INTO raw.{source}
                SELECT {contract_sql}, {extra_sql}, ?, CAST(__row_id AS BIGINT),
                       CAST(__day AS DATE), ?
                FROM chunk
                """,
                [lineage, loaded_at],
            )
            conn.unregister("chunk")


def _reject_chunk(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    lineage: str,
    read: ShopRead,
    partition_range: str,
    loaded_at: datetime,
) -> None:
    what = "ordered_at" if read.table == "orders" else "the ordered_at of its order_id"
    conn.execute(
        f"""
        INSERT INTO {REJECTS_TABLE}
        SELECT ?, NULL, ?, CAST(__row_id AS BIGINT),
               to_json(struct_pack({", ".join(f"{quote_ident(c)} := {quote_ident(c)}" for c in read.columns)}))::VARCHAR,
               'no_partition',
               ? || ' row ' || __row_id || ': ' || ? || ' is '
                 || coalesce('''' || __day || '''', 'missing')
                 || ', not a day of any partition (' || ? || '); correct it in the shop database',
               ?
        FROM chunk
        """,
        [source, lineage, lineage, what, partition_range, loaded_at],
    )
