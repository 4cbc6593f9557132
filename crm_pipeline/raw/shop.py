"""Loading the online shop's tables into raw in bulk, losing nothing.

Each table is read in one pass (shop_fetch: a SQLite file through ADBC, another database
through SQLAlchemy) and never row by row in Python. Rows are routed to partitions in DuckDB as
they arrive: orders by their day, items by their order's first day. A row whose day belongs
to no partition (missing, malformed or out of range, such as an order dated years ahead, or an
item whose order does not exist) goes to quarantine.raw_rejects; each load sweeps those anew.
Tables are read whole, a run over a few days (a daily run) included: which items belong to no
partition is known only from every order's day, and a filter that finds them in the shop costs
it more than sending them all (the shop need have no index); and the other days' rows are
compared with what raw holds of them (`changed_days`), so an order the shop refunded, added or
removed after its day was loaded is found, not silently missed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import sqlalchemy as sa

from crm_pipeline.failures import ActionableError, safe_url
from crm_pipeline.raw.shop_fetch import NOT_UTF8, ROW_ID, stage
from crm_pipeline.raw.tables import (
    DELIVERIES_TABLE,
    REJECTS_TABLE,
    extra_columns_sql,
    id_text,
    quote_ident,
)

# Internal names carry a prefix no delivered column is expected to use.
_DAY = "__crm_day"
_ROUTED, _ORDER_DAYS, _FIRST_DAYS = "shop_routed", "shop_order_days", "shop_first_days"


class ShopSchemaError(ActionableError):
    """The shop database cannot be read as the landing contract says: a table or column is
    missing, or its URL names a driver that is not installed."""


@dataclass(frozen=True)
class ShopRead:
    """One shop table to read: its contract columns and whether it is partitioned by day."""

    table: str
    columns: tuple[str, ...]
    partitioned: bool


def _source_columns(engine: sa.Engine, read: ShopRead) -> tuple[list[str], list[str]]:
    """The table's contract columns and extra columns; a clear error if the contract is unmet."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and not Path(database).exists():
        # Connecting would create an empty database file in its place.
        raise ShopSchemaError(
            f"No online shop database at {database}: set CRM_SHOP_URL to the shop's "
            "SQLAlchemy URL, or deliver the file there (for demo data: crm-pipeline generate)."
        )
    inspector = sa.inspect(engine)
    if not inspector.has_table(read.table):
        raise ShopSchemaError(
            f"The online shop database ({safe_url(str(engine.url))}) has "
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


_ORDERS = sa.table("orders", sa.column("order_id"), sa.column("ordered_at"))
_ORDER_DAY = sa.func.substr(sa.cast(_ORDERS.c.ordered_at, sa.String), 1, 10)


def shop_engine(url: str) -> sa.Engine:
    """The shop database's engine; a URL whose driver is not installed is named with one
    that is."""
    try:
        return sa.create_engine(url)
    except (ModuleNotFoundError, sa.exc.NoSuchModuleError) as error:
        raise ShopSchemaError(
            f"CRM_SHOP_URL {safe_url(url)} needs a database driver that is not installed "
            f"({error}). Name an installed one in the URL: postgresql+psycopg2://... for "
            "PostgreSQL, sqlite:///path for a SQLite file."
        ) from error
    except ValueError:  # its text may quote the password: a port read from an unescaped @
        raise ShopSchemaError(
            f"CRM_SHOP_URL {safe_url(url)} is not a database URL SQLAlchemy can read (a part of "
            "it, such as the port, is not what that part holds; a password with @, : or / in "
            "it must be percent-encoded). Give one such as "
            "postgresql+psycopg2://user:password@host:5432/shop or sqlite:///path/to/shop.sqlite."
        ) from None


def order_days(url: str) -> dict[str | None, int]:
    """Orders per day as the shop database has them (NULL or malformed days included)."""
    engine = shop_engine(url)
    _source_columns(engine, ShopRead("orders", ("order_id", "ordered_at"), True))
    with engine.connect() as db:
        query = sa.select(_ORDER_DAY, sa.func.count()).group_by(_ORDER_DAY)
        return {day: n for day, n in db.execute(query)}


def _unrouted(rows: str) -> str:
    return f"SELECT *, NULL::VARCHAR AS {_DAY} FROM {rows}"


def _routing(conn: duckdb.DuckDBPyConnection, read: ShopRead) -> Callable[[str], str]:
    """SQL giving each fetched row its partition day text (NULL: belongs to no partition)."""
    if read.table == "orders":
        return lambda rows: (
            f"""
            SELECT rows.*, days.day AS {_DAY}
            FROM {rows} AS rows
            LEFT JOIN partition_days AS days ON days.day = substr(rows.ordered_at, 1, 10)
        """
        )
    # An item belongs to its order's first valid day; orders exported twice count once.
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {_FIRST_DAYS} AS
        SELECT {id_text("o.order_id")} AS order_id, min(days.day) AS day
        FROM {_ORDER_DAYS} AS o
        JOIN partition_days AS days ON days.day = substr(o.ordered_at, 1, 10)
        GROUP BY ALL
        """
    )
    return lambda rows: (
        f"""
        SELECT rows.*, first_day.day AS {_DAY}
        FROM {rows} AS rows
        LEFT JOIN {_FIRST_DAYS} AS first_day ON first_day.order_id = {id_text("rows.order_id")}
    """
    )


def load_shop_table(
    conn: duckdb.DuckDBPyConnection,
    url: str,
    read: ShopRead,
    *,
    days: list[str] | None,
    valid_days: list[str],
    loaded_at: datetime,
) -> list[str]:
    """Append one shop table (or the rows of the given partition days) to raw.online_<table>;
    returns the other days whose rows changed in the shop since they were loaded.

    days: the partition days to load (None: the whole table, unpartitioned). valid_days:
    every partition day; rows whose day is none of them go to quarantine.
    """
    engine = shop_engine(url)
    columns, extra = _source_columns(engine, read)
    source, lineage = f"online_{read.table}", f"shop:{read.table}"
    extra_sql = extra_columns_sql(extra)
    insert = f"""
        INSERT INTO raw.{source}
        SELECT {", ".join(quote_ident(c) for c in read.columns)}, {extra_sql}, ?,
               CAST({ROW_ID} AS BIGINT), 1, CAST({_DAY} AS DATE), ?
        FROM {_ROUTED}
        WHERE NOT {NOT_UTF8}
    """
    names = columns + extra  # bytes that are not UTF-8 set a row aside in `columns` only
    if days is None:
        stage(conn, engine, read.table, names, _ROUTED, shape=_unrouted, checked=len(columns))
        conn.execute(insert, [lineage, loaded_at])
        _reject_not_utf8(conn, source, lineage, read, ("TRUE", []), loaded_at)
    else:
        conn.execute("CREATE OR REPLACE TEMP TABLE partition_days (day VARCHAR, in_run BOOLEAN)")
        conn.executemany(
            "INSERT INTO partition_days VALUES (?, ?)",
            [(d, days[0] <= d <= days[-1]) for d in valid_days],
        )
        if read.table != "orders":
            orders = ["order_id", "ordered_at"]
            stage(conn, engine, "orders", orders, _ORDER_DAYS)
        shape = _routing(conn, read)
        stage(conn, engine, read.table, names, _ROUTED, shape=shape, checked=len(columns))
        span = [days[0], days[-1]]
        conn.execute(insert + f" AND {_DAY} BETWEEN ? AND ?", [lineage, loaded_at, *span])
        _reject_unplaced(conn, source, lineage, read, valid_days, loaded_at)
        in_run = f"({_DAY} BETWEEN ? AND ? OR {_DAY} IS NULL)"
        _reject_not_utf8(conn, source, lineage, read, (in_run, span), loaded_at)
    _log_deliveries(conn, source, lineage, days, loaded_at)
    changed = [] if days is None else _changed_days(conn, source, read, days)
    for temp in (_ROUTED, _ORDER_DAYS, _FIRST_DAYS):
        conn.execute(f"DROP TABLE IF EXISTS {temp}")
    return changed


def _changed_days(
    conn: duckdb.DuckDBPyConnection, source: str, read: ShopRead, days: list[str]
) -> list[str]:
    """The days outside the run whose rows in the shop now differ from those raw holds (an
    order refunded, added or removed after its day was loaded), compared by count and by a sum
    of the rows' hashes over the contract's columns."""
    row = f"hash(struct_pack({', '.join(f'{quote_ident(c)} := {quote_ident(c)}' for c in read.columns)}))"
    return [
        str(day)
        for (day,) in conn.execute(
            f"""
            WITH shop AS (
                SELECT CAST({_DAY} AS DATE) AS day, count(*) AS n, sum(CAST({row} AS HUGEINT)) AS h
                FROM {_ROUTED}
                WHERE {_DAY} IS NOT NULL AND NOT {NOT_UTF8}
                GROUP BY 1
            ), held AS (
                SELECT partition_date AS day, count(*) AS n, sum(CAST({row} AS HUGEINT)) AS h
                FROM raw.{source}
                WHERE partition_date IS NOT NULL
                GROUP BY 1
            )
            SELECT day
            FROM shop FULL JOIN held USING (day)
            WHERE (shop.n, shop.h) IS DISTINCT FROM (held.n, held.h)
              AND NOT day BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)
              -- A day not loaded yet is not a changed one.
              AND day IN (SELECT partition_date FROM {DELIVERIES_TABLE} WHERE source = ?)
            ORDER BY day
            """,
            [days[0], days[-1], source],
        ).fetchall()
    ]


def _log_deliveries(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    lineage: str,
    days: list[str] | None,
    loaded_at: datetime,
) -> None:
    """Rows the shop delivered, per day, as fetched into DuckDB before routing."""
    if days is None:
        conn.execute(
            f"INSERT INTO {DELIVERIES_TABLE} SELECT ?, NULL, ?, count(*), ? FROM {_ROUTED}",
            [source, lineage, loaded_at],
        )
        return
    conn.execute(
        f"""
        INSERT INTO {DELIVERIES_TABLE}
        SELECT ?, CAST(days.day AS DATE), ?, count(routed.{_DAY}), ?
        FROM partition_days AS days
        LEFT JOIN {_ROUTED} AS routed ON routed.{_DAY} = days.day
        WHERE days.in_run
        GROUP BY days.day
        UNION ALL
        SELECT ?, NULL, ?, count(*), ?
        FROM {_ROUTED}
        WHERE {_DAY} IS NULL
        """,
        [source, lineage, loaded_at, source, lineage, loaded_at],
    )


def _reject(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    lineage: str,
    read: ShopRead,
    which: tuple[str, list],
    reason: str,
    detail: tuple[str, list],
    loaded_at: datetime,
) -> None:
    """Set aside the fetched rows matching `which`, each with its record as delivered and
    '<lineage> row <n>: ' + detail as the reason (SQL, each with its parameters)."""
    record = ", ".join(f"{quote_ident(c)} := {quote_ident(c)}" for c in read.columns)
    conn.execute(
        f"""
        INSERT INTO {REJECTS_TABLE}
        SELECT ?, CAST({_DAY} AS DATE), ?, CAST({ROW_ID} AS BIGINT),
               to_json(struct_pack({record}))::VARCHAR,
               ?,
               ? || ' row ' || {ROW_ID} || ': ' || {detail[0]},
               ?
        FROM {_ROUTED}
        WHERE {which[0]}
        """,
        [source, lineage, reason, lineage, *detail[1], loaded_at, *which[1]],
    )


def _reject_unplaced(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    lineage: str,
    read: ShopRead,
    valid_days: list[str],
    loaded_at: datetime,
) -> None:
    what = "ordered_at" if read.table == "orders" else "its order's ordered_at"
    span = f"{valid_days[0]} to {valid_days[-1]}" if valid_days else "none"
    shown = "substr(ordered_at, 1, 10)" if read.table == "orders" else "NULL"
    detail = (
        f"? || ' is ' || coalesce('''' || {shown} || '''', 'missing or unknown') "
        "|| ', not a day of any partition (' || ? || '); correct it in the shop database'"
    )
    which = (f"{_DAY} IS NULL AND NOT {NOT_UTF8}", [])
    _reject(conn, source, lineage, read, which, "no_partition", (detail, [what, span]), loaded_at)


def _reject_not_utf8(
    conn: duckdb.DuckDBPyConnection,
    source: str,
    lineage: str,
    read: ShopRead,
    in_run: tuple[str, list],
    loaded_at: datetime,
) -> None:
    """Rows holding bytes that are not UTF-8, set aside as a file's such lines are."""
    detail = (
        "'a value holds bytes that are not UTF-8 (shown escaped, as \\xFF); "
        "store the shop text as UTF-8, then re-run'"
    )
    which = (f"{NOT_UTF8} AND {in_run[0]}", in_run[1])
    _reject(conn, source, lineage, read, which, "invalid_encoding", (detail, []), loaded_at)
