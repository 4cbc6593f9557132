"""Fetching a shop table (or the rows a filter keeps) into a DuckDB temp table of text
columns, in bulk.

A SQLite shop is read through ADBC (adbc-driver-sqlite): rows arrive as Arrow batches of
typed columns, so no Python object is made per row or value, and DuckDB writes the numbers
as text. Another database packs every row into one JSON array of its values (or text
columns), so Python handles one string per row, and DuckDB parses them.

A value keeps its text whichever way it is read: text as stored, an integer in digits, a
REAL as DuckDB writes a double (the shortest text that reads back as the same number), so
an order id is the same text in orders and in order_items. SQLite text is fetched as bytes:
a row with a value that is not UTF-8 arrives with its bytes escaped (\\xFF) and marked
NOT_UTF8, for the loader to set aside.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import adbc_driver_sqlite.dbapi as adbc_sqlite
import duckdb
import pyarrow as pa
import sqlalchemy as sa

from crm_pipeline.raw.tables import quote_ident

CHUNK_ROWS = 100_000
BATCH_ROWS = 131_072  # rows per Arrow batch from SQLite
ROW_ID = "__crm_row_id"
# Whether a fetched row holds bytes that are not UTF-8 (its text then escapes them, as \xFF).
NOT_UTF8 = "__crm_not_utf8"
# A SELECT of the rows to keep, given a relation (SQL) of the fetched rows.
Shape = Callable[[str], str]


def _sqlite_form(declared: str) -> str:
    """How a column is fetched, from its declared type's affinity (sqlite.org/datatype3.html,
    section 3.1): 'integer' and 'real' columns hold numbers of that kind unless a value is not
    a number; 'text' columns hold text; any other column may hold anything ('mixed')."""
    declared = declared.upper()
    if "INT" in declared:
        return "integer"
    if any(word in declared for word in ("CHAR", "CLOB", "TEXT")):
        return "text"
    if any(word in declared for word in ("REAL", "FLOA", "DOUB")):
        return "real"
    return "mixed"


@dataclass(frozen=True)
class _SqliteColumn:
    """One shop column: the SQLite values fetched for it, the first row's values (which set
    each Arrow column's type) and the type that must follow from them, and its DuckDB text,
    given `_decoded` (each fetched BLOB as text, NULL where its bytes are not UTF-8)."""

    fetched: list[sa.ColumnElement]
    first: list[str]
    types: list[pa.DataType]
    text: str

    @property
    def blobs(self) -> list[str]:
        """The fetched values that arrive as bytes, to be decoded in DuckDB."""
        return [
            c.name for c, kind in zip(self.fetched, self.types, strict=True) if kind == pa.binary()
        ]


def _decoded(blob: str) -> str:
    return f"{blob}_text"


def _column_of(fetched: str) -> int:
    """The position of the shop column a fetched value ('c3', 't3') is of."""
    return int(fetched[1:])


def _sqlite_column(name: str, i: int, form: str) -> _SqliteColumn:
    """Text arrives as bytes (a BLOB cast), so bytes that are not UTF-8 reach DuckDB, which
    tells them apart, instead of failing the read."""
    value = sa.column(name)
    if form == "text":
        blob = f"c{i}"
        return _SqliteColumn(
            [sa.cast(value, sa.LargeBinary).label(blob)],
            ["X''"],
            [pa.binary()],
            f"coalesce({_decoded(blob)}, CAST({blob} AS VARCHAR))",
        )
    if form in ("integer", "real"):
        first, kind = ("0", pa.int64()) if form == "integer" else ("0.5", pa.float64())
        return _SqliteColumn([value.label(f"c{i}")], [first], [kind], f"CAST(c{i} AS VARCHAR)")
    # A REAL as DuckDB writes it; anything else as SQLite's text of it (integers alike).
    is_real = sa.func.typeof(value) == "real"
    blob = f"t{i}"
    return _SqliteColumn(
        [
            sa.case((is_real, value)).label(f"c{i}"),
            sa.case((~is_real, sa.cast(value, sa.LargeBinary))).label(blob),
        ],
        ["0.5", "X''"],
        [pa.float64(), pa.binary()],
        f"coalesce({_decoded(blob)}, CAST({blob} AS VARCHAR), CAST(c{i} AS VARCHAR))",
    )


def _row_id(engine: sa.Engine, table: str, columns: list[str]) -> str | None:
    """The name that reads SQLite's row id of the table: 'rowid', or another of its names
    when a column takes it (sqlite.org/lang_createtable.html#rowid); None when it has none."""
    taken = {c.lower() for c in columns}
    alias = next((a for a in ("rowid", "_rowid_", "oid") if a not in taken), None)
    if alias is None or table in sa.inspect(engine).get_view_names():
        return None
    with engine.connect() as db:
        try:
            db.exec_driver_sql(f"SELECT {alias} FROM {quote_ident(table)} LIMIT 0")
        except sa.exc.OperationalError:  # a WITHOUT ROWID table
            return None
    return alias


def _declared_types(engine: sa.Engine, table: str) -> dict[str, str]:
    with engine.connect() as db:
        rows = db.exec_driver_sql(f"PRAGMA table_info({quote_ident(table)})").fetchall()
    return {row[1]: row[2] or "" for row in rows}


def _sqlite_select(
    engine: sa.Engine,
    table: str,
    names: list[str],
    mixed: bool,
) -> tuple[sa.Select, dict[str, pa.DataType], list[str], list[str]]:
    """The rows to fetch, each with a row id, after one first row of fixed values; the Arrow
    type each fetched value
    must arrive as; the DuckDB text of each column; and the fetched values that are bytes.
    mixed: fetch every column as if it could hold anything."""
    declared = _declared_types(engine, table)
    columns = [
        _sqlite_column(n, i, "mixed" if mixed else _sqlite_form(declared.get(n, "")))
        for i, n in enumerate(names)
    ]
    fetched = [c for column in columns for c in column.fetched]
    source = sa.table(table)
    row_id = _row_id(engine, table, list(declared))
    if row_id is None:
        # No rowid (a view, a WITHOUT ROWID table, or one whose columns take every name of
        # it): rows are numbered by their columns in order, over all of them, so copies that
        # share their first columns are numbered alike on every read.
        number = sa.func.row_number().over(order_by=[sa.column(n) for n in names])
        rows = sa.select(number.label(ROW_ID), *fetched).select_from(source)
    else:
        rows = sa.select(sa.literal_column(row_id).label(ROW_ID), *fetched).select_from(source)
    first = sa.select(
        sa.literal_column("NULL").label(ROW_ID),
        *(
            sa.literal_column(value).label(c.name)
            for column in columns
            for c, value in zip(column.fetched, column.first, strict=True)
        ),
    )
    types = {
        c.name: kind
        for column in columns
        for c, kind in zip(column.fetched, column.types, strict=True)
    }
    blobs = [blob for column in columns for blob in column.blobs]
    return first.union_all(rows), types, [c.text for c in columns], blobs


def _compiled(engine: sa.Engine, select: sa.Select) -> tuple[str, list]:
    # IN lists rendered as one parameter per value, so the statement runs as it is.
    compiled = select.compile(engine, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    return str(compiled), [params[k] for k in compiled.positiontup or []]


def _stage_sqlite(
    conn: duckdb.DuckDBPyConnection,
    engine: sa.Engine,
    table: str,
    names: list[str],
    target: str,
    shape: Shape,
    checked: int,
) -> None:
    """ADBC types each Arrow column by the values of its first batch, widening it when they
    differ (text in a REAL column makes every value text, numbers in its own format); a value
    of another kind in a later batch stops the read. Either way the table is read again, as if
    every column could hold anything."""
    causes = []
    for mixed in (False, True):
        select, types, texts, blobs = _sqlite_select(engine, table, names, mixed)
        columns = [f"{text} AS {quote_ident(n)}" for text, n in zip(texts, names, strict=True)]
        undecoded = " OR ".join(
            f"({b} IS NOT NULL AND {_decoded(b)} IS NULL)" for b in blobs if _column_of(b) < checked
        )
        rows = f"""(
            SELECT {", ".join(columns)}, CAST({ROW_ID} AS VARCHAR) AS {ROW_ID},
                   {undecoded or "false"} AS {NOT_UTF8}
            FROM (
                SELECT *{"".join(f", try(decode({b})) AS {_decoded(b)}" for b in blobs)}
                FROM shop_batches
                WHERE {ROW_ID} IS NOT NULL
            )
        )"""
        stopped = _insert_sqlite_rows(
            conn, engine, select, types, f"INSERT INTO {target} {shape(rows)}"
        )
        if stopped is None:
            return
        causes.append(stopped)
        conn.execute(f"DELETE FROM {target}")
    raise OSError(f"shop table {table} could not be read: {'; then '.join(causes)}")


def _insert_sqlite_rows(
    conn: duckdb.DuckDBPyConnection,
    engine: sa.Engine,
    select: sa.Select,
    types: dict[str, pa.DataType],
    insert: str,
) -> str | None:
    """Runs insert, which reads the select's rows as shop_batches; why it stopped, when a
    value was not of its column's type."""
    sql, params = _compiled(engine, select)
    stopped: list[str] = []
    with adbc_sqlite.connect(read_only_uri(engine.url.database)) as shop, shop.cursor() as cursor:
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        cursor.execute(sql, params or None)
        batches = cursor.fetch_record_batch()
        widened = [n for n, kind in types.items() if batches.schema.field(n).type != kind]
        if widened:
            return f"columns {', '.join(widened)} hold values of more than one kind"

        def until_a_mismatch() -> Iterator[pa.RecordBatch]:
            try:
                yield from batches
            except OSError as error:
                if "Type mismatch" not in str(error):
                    raise  # the database failed, not a value: no re-read helps
                stopped.append(str(error))

        conn.register(
            "shop_batches", pa.RecordBatchReader.from_batches(batches.schema, until_a_mismatch())
        )
        try:
            conn.execute(insert)
        finally:
            conn.unregister("shop_batches")
    return stopped[0] if stopped else None


def _row_order(
    engine: sa.Engine, table: str, values: list[sa.ColumnElement]
) -> list[sa.ColumnElement]:
    """What numbers another database's rows, the same on every read of an unchanged table.

    A PostgreSQL table numbers them as it stores them (tableoid, ctid): the order rows were
    written in, as SQLite's rowid, so of a record exported twice the copy written last is the
    latest. Otherwise (a view, another database) the first two columns, then every value as
    text, so copies that share their first two columns are still numbered alike every time.
    """
    if engine.dialect.name == "postgresql" and table in sa.inspect(engine).get_table_names():
        return [sa.literal_column("tableoid"), sa.literal_column("ctid")]
    text = sa.Text if engine.dialect.name == "postgresql" else sa.String
    return [*values[:2], *(sa.cast(v, text) for v in values[2:])]


def _select(
    engine: sa.Engine,
    table: str,
    values: list[sa.ColumnElement],
) -> sa.Select:
    """Another database's rows as one JSON array of text per row, or text columns, with a row
    id numbered over the whole table."""
    row_id = sa.func.row_number().over(order_by=_row_order(engine, table, values))
    if engine.dialect.name == "postgresql":
        # Text casts keep PostgreSQL's own rendering of each value (JSON would reformat times).
        texts = [sa.cast(v, sa.Text) for v in [*values, row_id]]
        select = sa.select(sa.cast(sa.func.json_build_array(*texts), sa.Text))
    else:
        select = sa.select(*[sa.cast(v, sa.String) for v in [*values, row_id]])
    return select.select_from(sa.table(table))


def _batches(engine: sa.Engine, select: sa.Select) -> Iterator[pa.Table]:
    """A select's rows as Arrow tables: one packed column r, or text columns c0, c1, ..."""
    with engine.connect() as db:
        result = db.execution_options(stream_results=True, yield_per=CHUNK_ROWS)
        for rows in result.execute(select).partitions(CHUNK_ROWS):
            if len(rows[0]) == 1:
                yield pa.table({"r": pa.array([r[0] for r in rows], pa.string())})
            else:
                columns = list(zip(*rows, strict=True))
                yield pa.table({f"c{i}": pa.array(c, pa.string()) for i, c in enumerate(columns)})


def read_only_uri(path: str) -> str:
    """An SQLite URI that opens the file read-only: reading the shop never writes to it."""
    quoted = urllib.parse.quote(path)
    # An absolute path gets an empty authority, so a path starting '//' stays a path.
    return f"file://{quoted}?mode=ro" if path.startswith("/") else f"file:{quoted}?mode=ro"


def _is_sqlite_file(engine: sa.Engine) -> bool:
    """A SQLite database in a file named by a plain path, which ADBC opens read-only; the URL's
    options for SQLAlchemy's driver (timeout=...) do not apply. An in-memory database, or a
    URL whose database is itself a URI (uri=true), is read through SQLAlchemy instead."""
    url = engine.url
    return (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and url.query.get("uri") not in ("true", "1")
    )


def stage(
    conn: duckdb.DuckDBPyConnection,
    engine: sa.Engine,
    table: str,
    names: list[str],
    target: str,
    shape: Shape = lambda rows: f"SELECT * FROM {rows}",
    checked: int | None = None,
) -> None:
    """Copy a shop table into a DuckDB temp table:
    shape(rows) of its rows, which are a relation of text columns (the names and ROW_ID),
    so the rows can be joined on their way in. A row is marked NOT_UTF8 when one of its
    first `checked` columns (default: all) holds bytes that are not UTF-8; in the others
    such bytes are kept escaped."""
    all_names = [*names, ROW_ID]
    empty = ", ".join(f"NULL::VARCHAR AS {quote_ident(n)}" for n in all_names)
    empty += f", false AS {NOT_UTF8}"
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE {target} AS "
        f"SELECT * FROM ({shape(f'(SELECT {empty})')}) LIMIT 0"
    )
    if _is_sqlite_file(engine):
        checked = len(names) if checked is None else checked
        _stage_sqlite(conn, engine, table, names, target, shape, checked)
        return
    # A packed row is parsed once into a list of text values, then picked by position.
    # Such a database's driver decodes text itself, so no row is set aside for its bytes.
    packed = ", ".join(f"v[{i + 1}] AS {quote_ident(n)}" for i, n in enumerate(all_names))
    packed += f", false AS {NOT_UTF8}"
    plain = ", ".join(f"c{i} AS {quote_ident(n)}" for i, n in enumerate(all_names))
    plain += f", false AS {NOT_UTF8}"
    for chunk in _batches(engine, _select(engine, table, [sa.column(n) for n in names])):
        conn.register("chunk", chunk)
        rows = (
            f"SELECT {packed} FROM (SELECT json_transform(r, '[\"VARCHAR\"]') AS v FROM chunk)"
            if "r" in chunk.column_names
            else f"SELECT {plain} FROM chunk"
        )
        conn.execute(f"INSERT INTO {target} {shape(f'({rows})')}")
        conn.unregister("chunk")
