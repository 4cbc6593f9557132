"""The normalised-values cache: every delivered spelling gets the value its normaliser gives it,
while one parse serves every way a number is typed."""

from __future__ import annotations

import os
import random

import duckdb
import pytest

from crm_pipeline.generate.spelling import PHONE_STYLES, phone_text
from crm_pipeline.staging import lookups, phones
from crm_pipeline.staging.phones import phone_e164

NUMBERS = [(1, 4155550100), (86, 13812345678), (49, 15150701220), (49, 3012345678)]
ODD_SPELLINGS = [
    "0 049 30 1234567",  # national to phone_e164: the IDD is split
    "0 086 138 1234 5678",
    "(00 49) 30 1234567",
    "(+1) 415 555 0100",
    "+49 (0)30 1234567",
    "(0)30 1234567",
    "8001234567",  # US-shaped, not a valid US number, a valid Chinese one
    "1234567890",
    "2345678901",
    "1-2",
    "12",
    "+1-2",
    "+",
    "00",
    "(",
    "415 555 0100 ext. 12",
    "415.555.0100 x12",
    "tel: +1 415 555 0100",
    "+1 415 555 0100 / +1 415 555 0199",
    "１４１５５５５０１００",  # full-width digits
    "+1" + " " * 300 + "4155550100",  # past phonenumbers' input limit only with the spaces
    "4155550100" + "-" * 70,
    "+86 138 1234 5678",
    "0086-138-1234-5678",
    "13812345678",
    "015150701220",
]


def _warehouse() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA staging")
    conn.execute("CREATE TABLE delivered (phone VARCHAR)")
    return conn


def _fill(conn: duckdb.DuckDBPyConnection, values: list[str]) -> dict[str, str | None]:
    conn.execute("DELETE FROM delivered")
    conn.executemany("INSERT INTO delivered VALUES (?)", [[v] for v in values])
    lookups.fill_cache(conn, phone_e164, "SELECT DISTINCT phone AS raw FROM delivered", [])
    return dict(conn.execute(f"SELECT raw, value FROM {lookups.CACHE_TABLE}").fetchall())


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every value the cache reads: in DuckDB, then with the normaliser."""
    seen: list[str] = []
    normalise_all = lookups.normalise_all
    read_in_sql = phones.international_readings_sql

    def recording(fn, values: list[str]) -> list[str | None]:
        seen.extend(values)
        return normalise_all(fn, values)

    def recording_sql(conn: duckdb.DuckDBPyConnection, values: str) -> str:
        sql = read_in_sql(conn, values)
        seen.extend(
            raw for (raw,) in conn.execute(f"SELECT raw FROM ({sql}) ORDER BY raw").fetchall()
        )
        return sql

    monkeypatch.setattr(lookups, "normalise_all", recording)
    monkeypatch.setattr(phones, "international_readings_sql", recording_sql)
    return seen


def test_every_cached_spelling_has_the_value_phone_e164_gives_it() -> None:
    spellings = [phone_text(*n, style) for n in NUMBERS for style in range(PHONE_STYLES)]
    values = spellings + ODD_SPELLINGS
    cached = _fill(_warehouse(), values)
    assert set(values) <= set(cached)
    # The spellings read in their place are cached too, each with its own value.
    assert cached == {v: phone_e164(v) for v in cached}


def test_one_parse_serves_every_spelling_of_a_number(parsed: list[str]) -> None:
    spellings = ["(415) 555-0100", "415-555-0100", "+1 415 555 0100", "001 415 555 0100"]
    cached = _fill(_warehouse(), spellings)
    assert set(cached.values()) == {"+14155550100"}
    assert parsed == ["+14155550100"]


def test_a_us_shaped_number_the_us_does_not_hold_is_read_as_typed(parsed: list[str]) -> None:
    cached = _fill(_warehouse(), ["800 123 4567"])
    assert cached["800 123 4567"] == "+868001234567"
    assert parsed == ["+18001234567", "800 123 4567"]


def test_a_later_delivery_reuses_a_number_already_read(parsed: list[str]) -> None:
    conn = _warehouse()
    _fill(conn, ["+1 415 555 0100"])
    cached = _fill(conn, ["(415) 555-0100", "+1 212 555 0199"])
    assert cached["(415) 555-0100"] == "+14155550100"
    assert cached["+1 212 555 0199"] == "+12125550199"
    assert parsed == ["+14155550100", "+12125550199"]


def test_many_values_are_normalised_on_every_core_in_their_order() -> None:
    values = [
        f"+1 415 555 {i % 10_000:04d}" if i % 3 else f"  {i} Main St  " for i in range(30_000)
    ]
    expected = [phone_e164(v) for v in values]
    # Forking free: the values past the timed first few go to the workers.
    assert lookups.normalise_all(phone_e164, values, fork_seconds=0) == expected
    assert lookups.normalise_all(phone_e164, values[:100], fork_seconds=0) == expected[:100]
    assert lookups.normalise_all(phone_e164, values) == expected
    # Not only here: the values past the first few are read in worker processes.
    ran_in = lookups.normalise_all(_process_of, values, fork_seconds=0)
    here = str(os.getpid())
    assert ran_in[0] == here and set(ran_in) - {here}
    assert ran_in[-1] != here


def _process_of(_: str) -> str:
    return str(os.getpid())


def test_a_chinese_mobile_typed_nationally_shares_the_parse_of_its_international_spelling(
    parsed: list[str],
) -> None:
    cached = _fill(_warehouse(), ["139 1234 5678", "+86 139-1234-5678", "1 415 555 0100"])
    assert cached["139 1234 5678"] == cached["+86 139-1234-5678"] == "+8613912345678"
    # Eleven digits from '141', a range no Chinese mobile has: read as typed, a US number.
    assert cached["1 415 555 0100"] == "+14155550100"
    assert sorted(parsed) == ["+8613912345678", "+8614155550100", "1 415 555 0100"]


def test_a_german_mobile_typed_nationally_shares_the_parse_of_its_international_spelling(
    parsed: list[str],
) -> None:
    cached = _fill(_warehouse(), ["0151 50701220", "+49 151 50701220", "0170 1234567"])
    assert cached["0151 50701220"] == cached["+49 151 50701220"] == "+4915150701220"
    assert cached["0170 1234567"] == "+491701234567"
    assert sorted(parsed) == ["+4915150701220", "+491701234567"]


def test_numbers_typed_like_german_mobiles_get_the_value_phone_e164_gives_them() -> None:
    # Every prefix from 01500 to 01799, eleven and twelve digits: the German reading is exact
    # (or the number is read as typed) whatever the format German numbers of the range take.
    rng = random.Random(7)
    values = [
        f"0{prefix} {rng.randrange(10 ** (length - 6)):0{length - 6}d}"
        for prefix in range(1500, 1800)
        for length in (11, 12)
        for _ in range(2)
    ]
    cached = _fill(_warehouse(), values)
    assert {v: cached[v] for v in values} == {v: phone_e164(v) for v in values}


def test_a_german_number_with_its_trunk_zero_after_the_code_shares_the_parse_without_it(
    parsed: list[str],
) -> None:
    cached = _fill(_warehouse(), ["+49 (0)30 1234567", "0049 030 1234567", "+49 30 1234567"])
    assert set(cached.values()) == {"+49301234567"}
    assert parsed == ["+49301234567"]


def test_numbers_with_a_zero_after_49_get_the_value_phone_e164_gives_them() -> None:
    # Every three-digit start and every length phonenumbers takes, valid or not, and '00'
    # after the code (phonenumbers drops one '0' only).
    rng = random.Random(11)
    values = [
        f"+49 (0){start}{rng.randrange(10**12):012d}"[: 9 + length]
        for start in range(100, 1000)
        for length in (2, 6, 9, 12)
    ]
    values += ["+49 00 30 1234567", "0049 0", "+490", "+49 (0)", "+49 0 0"]
    cached = _fill(_warehouse(), values)
    assert {v: cached[v] for v in values} == {v: phone_e164(v) for v in values}
    assert sum(cached[v] is not None for v in values) > 1000
