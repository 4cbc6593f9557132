"""Awkward but ordinary files: every line lands or is quarantined with its own text, and counts add up."""

from __future__ import annotations

import codecs
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from crm_pipeline import landing
from crm_pipeline.raw import shop_fetch
from crm_pipeline.raw.checks import rows_accounted_result
from crm_pipeline.raw.files import deliveries, load_csv, load_jsonl
from crm_pipeline.raw.shop import ShopRead, load_shop_table
from crm_pipeline.raw.tables import REJECTS_TABLE, ensure_raw_tables

DAY = "2025-01-01"
STORES = landing.STORES
HEADER = b"store_id,city,region"


def _load(tmp_path: Path, content: bytes, source: landing.FileSource = STORES):
    path = tmp_path / f"{source.name}.file"
    path.write_bytes(content)
    conn = duckdb.connect()
    ensure_raw_tables(conn, source.name, source.columns)
    loader = load_jsonl if source is landing.INQUIRIES else load_csv
    loader(conn, source.name, source.columns, deliveries([(path, path.name, DAY)]), datetime.now())
    check = rows_accounted_result(conn, source.name, "TRUE", [])
    return conn, check


def _raw(conn: duckdb.DuckDBPyConnection, *columns: str) -> list[tuple]:
    return conn.execute(
        f"SELECT {', '.join(columns)} FROM raw.stores ORDER BY source_line"
    ).fetchall()


def _rejects(conn: duckdb.DuckDBPyConnection) -> list[tuple]:
    return conn.execute(
        "SELECT source_line, reason, raw_text FROM quarantine.raw_rejects ORDER BY source_line"
    ).fetchall()


def test_a_quoted_value_with_a_blank_line_is_one_record_and_counts_add_up(tmp_path: Path) -> None:
    conn, check = _load(tmp_path, HEADER + b'\nS1,"Spring\n\nfield",West\nS2,Shelby,West\n')
    assert _raw(conn, "store_id", "city", "source_line") == [
        ("S1", "Spring\n\nfield", 2),
        ("S2", "Shelby", 3),
    ]
    assert check.passed, check.description


def test_crlf_file_quarantines_the_bad_line_with_its_own_text(tmp_path: Path) -> None:
    content = (
        HEADER + b"\r\nS1,A,West\r\nS2,B,West\r\nS3,C,West\r\nS4,Caf\xe9,West\r\nS5,E,West\r\n"
    )
    conn, check = _load(tmp_path, content)
    assert _rejects(conn) == [(5, "invalid_encoding", "S4,Caf\\xe9,West")]
    assert [r[0] for r in _raw(conn, "store_id")] == ["S1", "S2", "S3", "S5"]
    assert not check.passed and "All 5 delivered rows" in check.description


@pytest.mark.parametrize(
    ("content", "rule", "what"),
    [
        (HEADER + b"\rS1,A,West\rS2,B,West\r", "line_breaks", "bare carriage return"),
        (HEADER + b"\r\nS1,A,West\r\nS2,B,West\n", "line_breaks", "some in CRLF, some in LF"),
        (
            HEADER + b"\r\r\nS1,A,West\r\r\nS2,B,West\r\r\n",
            "line_breaks",
            "converted to CRLF twice",
        ),
        (
            (HEADER + b"\r\nS1,A,West\r\nS2,B,West\r\n").decode().encode("utf-16"),
            "utf16_text",
            "UTF-16",
        ),
        (
            (HEADER + b"\nS1,A,West\nS2,B,West\n").decode().encode("utf-16-le"),
            "utf16_text",
            "UTF-16",
        ),
        (b"PK\x03\x04\x14\x00\x00\x00\nS1\x00\nS2\x00,B\n", "not_text", "not text"),
    ],
)
def test_a_file_with_bare_cr_line_breaks_or_not_in_utf8_is_set_aside_whole_line_by_line(
    tmp_path: Path, content: bytes, rule: str, what: str
) -> None:
    conn, check = _load(tmp_path, content)
    rejects = _rejects(conn)
    assert [(line, reason) for line, reason, _ in rejects] == [(2, rule), (3, rule)]
    if rule != "not_text":
        assert [text for *_, text in rejects] == ["S1,A,West", "S2,B,West"]
    (detail,) = {d for (d,) in conn.execute("SELECT detail FROM quarantine.raw_rejects").fetchall()}
    assert detail.startswith("stores.file: ") and what in detail and "export it" in detail
    assert _raw(conn, "store_id") == []
    assert check.severity.value == "WARN"
    assert "All 2 delivered rows accounted for; 1 file(s) set aside whole" in check.description


def test_a_rejected_record_spanning_lines_keeps_all_its_text(tmp_path: Path) -> None:
    conn, check = _load(tmp_path, HEADER + b'\nS1,"two\nlines"\nS2,B,West\n')
    assert _rejects(conn) == [(2, "missing_values", 'S1,"two\nlines"')]
    assert "All 3 delivered rows" in check.description


def test_a_crlf_file_with_a_line_feed_inside_a_quoted_value_loads(tmp_path: Path) -> None:
    conn, check = _load(tmp_path, HEADER + b'\r\nS1,"Spring\nfield",West\r\nS2,B,West\r\n')
    assert _raw(conn, "store_id", "city") == [("S1", "Spring\nfield"), ("S2", "B")]
    assert check.passed
    # A quote inside a value (an inch mark) opens no quoted value.
    content = HEADER + b'\r\nS1,12" Mall,West\r\nS2,"Two\nlines",West\r\nS3,C,West\r\n'
    conn, check = _load(tmp_path, content)
    assert [r[0] for r in _raw(conn, "store_id")] == ["S1", "S2", "S3"] and check.passed


def test_a_trailing_comma_in_the_header_keeps_the_unnamed_column(tmp_path: Path) -> None:
    conn, check = _load(tmp_path, HEADER + b",\nS1,A,West,x\n")
    assert _raw(conn, "store_id", "extra_columns") == [("S1", '{"column_4":"x"}')]
    assert check.passed


def test_header_names_in_another_case_or_spaced_are_the_contracts_columns(tmp_path: Path) -> None:
    conn, check = _load(tmp_path, b"Store_ID, City ,REGION,Manager\nS1,A,West,Kim\n")
    assert _raw(conn, "store_id", "city", "region", "extra_columns") == [
        ("S1", "A", "West", '{"Manager":"Kim"}')
    ]
    assert check.passed


def test_a_header_naming_a_column_twice_in_two_cases_is_set_aside_naming_it(
    tmp_path: Path,
) -> None:
    conn, _ = _load(tmp_path, b"Store_ID,STORE_ID,city,region\nS1,S2,A,West\n")
    assert conn.execute("SELECT count(*) FROM raw.stores").fetchone() == (0,)
    why = (
        "stores.file: header lacks ['store_id'] (it has ['Store_ID', 'STORE_ID']); fix the "
        "header and deliver the file again, then re-materialize its source (a daily file: "
        "for its day)"
    )
    assert conn.execute(f"SELECT DISTINCT reason, detail FROM {REJECTS_TABLE}").fetchall() == [
        ("header_mismatch", why)
    ]


def test_a_file_separated_by_semicolons_is_set_aside_saying_so(tmp_path: Path) -> None:
    conn, _ = _load(tmp_path, b"store_id;city;region\nS1;A;West\n")
    ((detail,),) = conn.execute(f"SELECT DISTINCT detail FROM {REJECTS_TABLE}").fetchall()
    assert "its values are separated by semicolons: export it separated by commas" in detail


def test_a_file_delivered_without_its_header_is_set_aside_quoting_no_value(
    tmp_path: Path,
) -> None:
    # The first record stands where the header should: its values are shown by their shape.
    conn, _ = _load(tmp_path, b"S1,Anna Berg,anna.berg@gmail.com\nS2,Bo,West\n")
    ((reason, detail),) = conn.execute(
        f"SELECT DISTINCT reason, detail FROM {REJECTS_TABLE}"
    ).fetchall()
    assert reason == "header_mismatch"
    assert "(it has ['S1', 'Xxxx Xxxx', 'xxxx.xxxx@xxxxx.xxx'])" in detail
    assert "Anna" not in detail and "gmail" not in detail


@pytest.mark.parametrize("extra", [b"rowid", b"STORE_ID", b"__crm_file"])
def test_delivered_names_never_collide_with_internal_ones(tmp_path: Path, extra: bytes) -> None:
    conn, check = _load(tmp_path, HEADER + b"," + extra + b"\nS1,A,West,x\n")
    assert _raw(conn, "store_id", "extra_columns ->> '" + extra.decode() + "'") == [("S1", "x")]
    assert check.passed


def test_a_line_of_blanks_in_json_lines_is_quarantined(tmp_path: Path) -> None:
    conn, check = _load(
        tmp_path, b'{"inquiry_id": "I1"}\n   \n\n{"inquiry_id": "I2"}\n', landing.INQUIRIES
    )
    assert conn.execute(
        "SELECT inquiry_id, source_line FROM raw.inquiries ORDER BY 2"
    ).fetchall() == [
        ("I1", 1),
        ("I2", 4),
    ]
    assert _rejects(conn) == [(2, "invalid_json", "   ")]
    assert "All 3 delivered rows" in check.description


def test_a_shop_table_given_as_a_view_loads_like_a_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as db:
        db.exec_driver_sql("CREATE TABLE export (id TEXT, customer TEXT, at TEXT)")
        db.exec_driver_sql("INSERT INTO export VALUES ('O1', 'A1', '2025-01-01 10:00:00')")
        db.exec_driver_sql(
            "CREATE VIEW orders AS SELECT id AS order_id, customer AS account_id, "
            "at AS ordered_at, 'completed' AS status, 'card' AS payment_method, "
            "'USD' AS currency, 10.0 AS total_amount FROM export"
        )
    conn = duckdb.connect()
    ensure_raw_tables(conn, "online_orders", landing.ORDERS.columns)
    read = ShopRead("orders", landing.ORDERS.columns, partitioned=True)
    load_shop_table(conn, url, read, days=[DAY], valid_days=[DAY], loaded_at=datetime.now())
    rows = conn.execute("SELECT order_id, source_line FROM raw.online_orders").fetchall()
    assert rows == [("O1", 1)]
    assert rows_accounted_result(conn, "online_orders", "TRUE", []).passed


# Declared types whose SQLite affinity is REAL, NUMERIC and none; the other columns are TEXT.
ACCOUNT_TYPES = {"income": "FLOAT", "birth_date": "DATE", "created_at": ""}
ACCOUNTS_AS_TEXT = [  # (account_id, income, birth_date, created_at): stored, then landed
    (("A1", None, None, None), ("A1", None, None, None)),
    (("A2", 52000, "1990-04-01", 20250101), ("A2", "52000.0", "1990-04-01", "20250101")),
    (("A3", 0.1 + 0.2, 19900401, 2.5), ("A3", "0.30000000000000004", "19900401", "2.5")),
]


@pytest.mark.parametrize("batch_rows", [1, shop_fetch.BATCH_ROWS])
@pytest.mark.parametrize("text_in_a_number_column", [False, True])
def test_shop_values_land_as_text_whatever_their_column_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch_rows: int, text_in_a_number_column: bool
) -> None:
    # SQLite keeps a value of another kind than its column's type (text in a FLOAT column);
    # the Arrow batches it is read in take each column's type from their first row.
    monkeypatch.setattr(shop_fetch, "BATCH_ROWS", batch_rows)
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}"
    columns = landing.ACCOUNTS.columns
    declared = ", ".join(f"{c} {ACCOUNT_TYPES.get(c, 'TEXT')}" for c in columns)
    stored = [row for row, _ in ACCOUNTS_AS_TEXT]
    landed = [row for _, row in ACCOUNTS_AS_TEXT]
    if text_in_a_number_column:
        stored.append(("A4", "n/a", "", "2025-01-01 09:00:00"))
        landed.append(("A4", "n/a", "", "2025-01-01 09:00:00"))
    with sa.create_engine(url).begin() as db:
        db.exec_driver_sql(f"CREATE TABLE accounts ({declared})")
        for account_id, income, birth_date, created_at in stored:
            db.exec_driver_sql(
                "INSERT INTO accounts (account_id, income, birth_date, created_at) "
                "VALUES (?, ?, ?, ?)",
                (account_id, income, birth_date, created_at),
            )
    conn = duckdb.connect()
    ensure_raw_tables(conn, "online_accounts", columns)
    read = ShopRead("accounts", columns, partitioned=False)
    load_shop_table(conn, url, read, days=None, valid_days=[DAY], loaded_at=datetime.now())
    rows = conn.execute(
        "SELECT account_id, income, birth_date, created_at FROM raw.online_accounts "
        "ORDER BY source_line"
    ).fetchall()
    assert rows == landed
    assert rows_accounted_result(conn, "online_accounts", "TRUE", []).passed


def _load_text_shop(
    tmp_path: Path,
    table: landing.ShopTable,
    rows: str,
    days: list[str] | None,
    more: str = "",
    options: str = "",
) -> duckdb.DuckDBPyConnection:
    """A SQLite shop whose one table has TEXT columns (and `more` of its definition) and these
    rows ('(columns) VALUES ...'), loaded into an in-memory warehouse through its URL (with
    `options`)."""
    url = f"sqlite:///{tmp_path / 'shop.sqlite'}{options}"
    with sa.create_engine(url).begin() as db:
        declared = ", ".join(f"{c} TEXT" for c in table.columns)
        db.exec_driver_sql(f"CREATE TABLE {table.name} ({declared}{more})")
        db.exec_driver_sql(f"INSERT INTO {table.name} {rows}")
    conn = duckdb.connect()
    ensure_raw_tables(conn, f"online_{table.name}", table.columns)
    read = ShopRead(table.name, table.columns, partitioned=days is not None)
    load_shop_table(conn, url, read, days=days, valid_days=[DAY], loaded_at=datetime.now())
    return conn


def test_shop_text_that_is_not_utf8_is_set_aside_with_its_bytes_escaped(tmp_path: Path) -> None:
    # A legacy shop can hold Latin-1 bytes in a TEXT column; DuckDB stores only UTF-8.
    conn = _load_text_shop(
        tmp_path,
        landing.ACCOUNTS,
        "(account_id, full_name) "
        "VALUES ('A1', 'Anna'), ('A2', CAST(X'4A6FFF' AS TEXT)), ('A3', '王伟')",
        days=None,
    )
    landed = "SELECT account_id, full_name FROM raw.online_accounts ORDER BY source_line"
    assert conn.execute(landed).fetchall() == [("A1", "Anna"), ("A3", "王伟")]
    rejects = conn.execute(
        "SELECT source_line, reason, raw_text->>'full_name', detail FROM quarantine.raw_rejects"
    ).fetchall()
    assert [r[:3] for r in rejects] == [(2, "invalid_encoding", "Jo\\xFF")]
    assert rejects[0][3].startswith("shop:accounts row 2: a value holds bytes that are not UTF-8")
    accounted = rows_accounted_result(conn, "online_accounts", "TRUE", [])
    assert accounted.description.startswith("All 3 delivered rows accounted for")


def test_a_shop_order_with_bytes_that_are_not_utf8_is_set_aside_on_its_day(
    tmp_path: Path,
) -> None:
    conn = _load_text_shop(
        tmp_path,
        landing.ORDERS,
        "(order_id, ordered_at, status) VALUES "
        f"('O1', '{DAY} 09:00:00', 'paid'), ('O2', '{DAY} 10:00:00', X'FF'), ('O3', NULL, X'FF')",
        days=[DAY],
    )
    assert conn.execute("SELECT order_id FROM raw.online_orders").fetchall() == [("O1",)]
    rejects = conn.execute(
        "SELECT source_line, CAST(partition_date AS VARCHAR), reason FROM quarantine.raw_rejects "
        "ORDER BY source_line"
    ).fetchall()
    assert rejects == [(2, DAY, "invalid_encoding"), (3, None, "invalid_encoding")]
    accounted = rows_accounted_result(conn, "online_orders", "TRUE", [])
    assert accounted.description.startswith("All 3 delivered rows accounted for")


def test_a_shop_in_a_folder_whose_name_a_uri_must_quote_is_read(tmp_path: Path) -> None:
    # The shop file is opened read-only through an SQLite URI, where ' ', '#' and 'é' are quoted.
    folder = tmp_path / "shop #1 é"
    folder.mkdir()
    conn = _load_text_shop(folder, landing.ACCOUNTS, "(account_id) VALUES ('A1')", days=None)
    assert conn.execute("SELECT account_id FROM raw.online_accounts").fetchall() == [("A1",)]


@pytest.mark.parametrize(
    ("more", "numbered"),
    [
        (", rowid TEXT", [1, 3, 2]),  # SQLite's rowid is then read as _rowid_
        (", rowid TEXT, _rowid_ TEXT, oid TEXT", [1, 2, 3]),  # no name left: by the first two
        (", PRIMARY KEY (account_id)) WITHOUT ROWID --", [1, 2, 3]),
    ],
)
def test_a_shop_table_whose_rowid_is_taken_or_missing_loads_every_row(
    tmp_path: Path, more: str, numbered: list[int]
) -> None:
    extra = "rowid, " if "rowid TEXT" in more else ""
    conn = _load_text_shop(
        tmp_path,
        landing.ACCOUNTS,
        f"(account_id, email, {extra}full_name) VALUES ('A1', 'a', {'NULL, ' if extra else ''}'x'),"
        f" ('A3', 'c', {'7, ' if extra else ''}'y'), ('A2', 'b', {'NULL, ' if extra else ''}'z')",
        days=None,
        more=more,
    )
    landed = conn.execute(
        "SELECT source_line, account_id FROM raw.online_accounts ORDER BY account_id"
    ).fetchall()
    assert landed == list(zip(numbered, ["A1", "A2", "A3"], strict=True))
    assert rows_accounted_result(conn, "online_accounts", "TRUE", []).passed


def test_bytes_that_are_not_utf8_outside_the_contract_keep_their_row(tmp_path: Path) -> None:
    conn = _load_text_shop(
        tmp_path,
        landing.ACCOUNTS,
        "(account_id, photo) VALUES ('A1', X'FFD8FF'), ('A2', NULL)",
        days=None,
        more=", photo BLOB",
    )
    landed = "SELECT account_id, extra_columns->>'photo' FROM raw.online_accounts ORDER BY 1"
    assert conn.execute(landed).fetchall() == [("A1", "\\xFF\\xD8\\xFF"), ("A2", None)]


def test_options_of_a_sqlite_url_do_not_change_what_lands(tmp_path: Path) -> None:
    # timeout=... is for SQLAlchemy's driver: the file is still read through ADBC.
    conn = _load_text_shop(
        tmp_path,
        landing.ACCOUNTS,
        "(account_id, full_name, spare) VALUES ('A1', 'x', 0.1 + 0.2), ('A2', X'FF', NULL)",
        days=None,
        more=", spare REAL",
        options="?timeout=5",
    )
    landed = "SELECT account_id, extra_columns->>'spare' FROM raw.online_accounts"
    rows = conn.execute(landed).fetchall()
    assert rows == [("A1", "0.30000000000000004")]
    reasons = conn.execute("SELECT reason FROM quarantine.raw_rejects").fetchall()
    assert reasons == [("invalid_encoding",)]


def test_a_file_name_with_glob_characters_is_read_once_as_itself(tmp_path: Path) -> None:
    odd, plain = tmp_path / "pos*x[1].csv", tmp_path / "posAx1.csv"
    odd.write_bytes(HEADER + b"\nS1,A,West\n")
    plain.write_bytes(HEADER + b"\nS2,B,West\n")
    conn = duckdb.connect()
    ensure_raw_tables(conn, "stores", STORES.columns)
    files = deliveries([(odd, odd.name, DAY)])
    load_csv(conn, "stores", STORES.columns, files, datetime.now())
    assert _raw(conn, "store_id", "source_file") == [("S1", "pos*x[1].csv")]


def test_a_quote_left_open_in_one_of_several_files_is_rejected_with_the_rest_of_its_file(
    tmp_path: Path,
) -> None:
    # A stray quote opening the last value of a line: the value runs to the end of the file.
    # DuckDB (2.0.1) drops that reject when it reads the file among four others or more.
    lines = [f"S{i},City{i},West" for i in range(1, 9)]
    lines[4] = 'S5,City5,"West'
    broken = tmp_path / "a.csv"
    broken.write_bytes(HEADER + b"\n" + "\n".join(lines).encode() + b"\n")
    files = [(broken, broken.name, DAY)]
    for n in range(4):
        other = tmp_path / f"b{n}.csv"
        other.write_bytes(HEADER + f"\nT{n},Town,East\n".encode())
        files.append((other, other.name, DAY))
    conn = duckdb.connect()
    ensure_raw_tables(conn, "stores", STORES.columns)
    load_csv(conn, "stores", STORES.columns, deliveries(files), datetime.now())
    check = rows_accounted_result(conn, "stores", "TRUE", [])
    assert check.severity.value == "WARN", check.description  # every line accounted for
    assert [r[:2] for r in _rejects(conn)] == [(6, "unquoted_value")]
    assert _rejects(conn)[0][2].count("\n") == 3  # lines 6 to 9, the rest of the file
    assert conn.execute("SELECT count(*) FROM raw.stores").fetchone()[0] == 4 + 4


def test_a_file_whose_name_is_in_capitals_is_read_and_another_name_is_stray(tmp_path: Path) -> None:
    day = tmp_path / "store_purchases" / DAY
    day.mkdir(parents=True)
    for name in ("POS_EXPORT.CSV", "pos.csv", "notes.txt"):
        (day / name).write_text("x")
    source = landing.STORE_PURCHASES
    assert [p.name for p in source.files(tmp_path, DAY)] == ["POS_EXPORT.CSV", "pos.csv"]
    assert [p.name for p in source.stray_files(tmp_path, {DAY})] == ["notes.txt"]


def test_a_json_lines_file_of_only_a_byte_order_mark_is_a_day_without_rows(
    tmp_path: Path,
) -> None:
    conn, check = _load(tmp_path, codecs.BOM_UTF8, landing.INQUIRIES)
    assert conn.execute("SELECT count(*) FROM raw.inquiries").fetchone() == (0,)
    assert _rejects(conn) == []
    assert check.passed
    # With rows after the mark, the rows count as delivered, the mark as nothing.
    conn, check = _load(tmp_path, codecs.BOM_UTF8 + b'{"inquiry_id": "I1"}\n', landing.INQUIRIES)
    assert conn.execute("SELECT inquiry_id FROM raw.inquiries").fetchall() == [("I1",)]
    assert check.passed


def test_a_wide_csv_loads_and_one_wider_than_a_thousand_columns_is_set_aside(
    tmp_path: Path,
) -> None:
    extra = [f"x{i}" for i in range(995)]  # 998 columns in all
    header = HEADER + b"," + ",".join(extra).encode()
    conn, check = _load(tmp_path, header + b"\nS1,A,West" + b",v" * len(extra) + b"\n")
    assert _raw(conn, "store_id") == [("S1",)] and check.passed
    wider = [f"x{i}" for i in range(1000)]
    header = HEADER + b"," + ",".join(wider).encode()
    conn, check = _load(tmp_path, header + b"\nS1,A,West" + b",v" * len(wider) + b"\n")
    assert _raw(conn, "store_id") == []
    (detail,) = {d for (d,) in conn.execute("SELECT detail FROM quarantine.raw_rejects").fetchall()}
    assert "the header has 1003 columns, more than 1000" in detail
