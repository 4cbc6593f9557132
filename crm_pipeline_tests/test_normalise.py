"""Normalised contact fields: every way the generator writes one email, phone or name gives one value."""

from __future__ import annotations

from itertools import product
from types import SimpleNamespace

import duckdb
import numpy as np
import pandas as pd
import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from crm_pipeline.generate.names import ZH_GIVEN_FEMALE, ZH_GIVEN_MALE, ZH_SURNAMES
from crm_pipeline.generate.people import full_names
from crm_pipeline.generate.spelling import (
    EMAIL_STYLES,
    NAME_STYLES,
    PHONE_STYLES,
    broken_phone,
    email_text,
    malformed_email,
    phone_text,
)
from crm_pipeline.staging.normalise import (
    address,
    email,
    email_readings_sql,
    full_name,
    name_key,
    over_distinct,
)
from crm_pipeline.staging.phones import _international, international_readings_sql, phone_e164

MAILBOXES = {
    "anna.berg@gmail.com": "annaberg@gmail.com",
    "a.berg@outlook.com": "a.berg@outlook.com",
    "1234567890@qq.com": "1234567890@qq.com",
    "juergen_mueller@t-online.de": "juergen_mueller@t-online.de",
    "wei.wang37@163.com": "wei.wang37@163.com",
    "anna.berg@bergundsoehnegmbh.de": "anna.berg@bergundsoehnegmbh.de",
}
NUMBERS = {
    (1, 4155550100): "+14155550100",
    (1, 2125550199): "+12125550199",
    (86, 15132066626): "+8615132066626",
    (86, 13812345678): "+8613812345678",
    (49, 15150701220): "+4915150701220",
    (49, 17612345678): "+4917612345678",
}


@pytest.mark.parametrize(("mailbox", "canonical"), MAILBOXES.items())
def test_every_spelling_of_a_mailbox_gives_one_address(mailbox: str, canonical: str) -> None:
    spellings = {email_text(mailbox, style) for style in range(EMAIL_STYLES)}
    assert {email(text) for text in spellings} == {canonical}


def test_gmail_ignores_dots_plus_tags_and_the_googlemail_domain() -> None:
    assert email("A.n.n.a.Berg+news@GoogleMail.com") == "annaberg@gmail.com"


def test_a_plus_tag_is_dropped_for_every_domain_but_dots_only_for_gmail() -> None:
    assert email("Anna.Berg+shop@web.de") == "anna.berg@web.de"


def test_full_width_characters_are_read_as_ascii() -> None:
    assert email("ａｎｎａ＠ｗｅｂ．ｄｅ") == "anna@web.de"


@pytest.mark.parametrize(("mailbox", "kind"), list(product(MAILBOXES, range(4))))
def test_every_malformed_kind_the_generator_writes_is_rejected(mailbox: str, kind: int) -> None:
    assert email(malformed_email(mailbox, kind)) is None


@pytest.mark.parametrize(
    "text",
    [
        "anna.berg@gmail.com.",
        "anna.berg@gmail,com",
        "anna berg@gmail.com",
        "anna.berg@gmail.c",
        "anna@-gmail.com",
        "@gmail.com",
        "anna.berg@",
        "+shop@gmail.com",
        "",
        "   ",
        None,
    ],
)
def test_other_malformed_or_empty_emails_are_none(text: str | None) -> None:
    assert email(text) is None


def _email_texts() -> list[str]:
    """Every spelling and malformed kind of the mailboxes, edge cases around each step of
    `email`, and random strings of the characters an address is made of."""
    texts = [email_text(m, style) for m in MAILBOXES for style in range(EMAIL_STYLES)]
    texts += [malformed_email(m, kind) for m in MAILBOXES for kind in range(4)]
    texts += [
        " A.b+Tag@GoogleMail.com\x1c",
        "\x0ba@x.com\n",
        "a\tb@x.com",
        "a\x1fb@x.com",
        "a\x00b@x.com",
        ".a@x.com",
        "a..b@x.com",
        "a.@x.com",
        "a@x-.com",
        "a@x.co1",
        "a@@x.com",
        "a@x",
        "a+b+c@x.com",
        "a.+b@gmail.com",
        "+b@gmail.com",
        ".+b@gmail.com",
        "o'neil@x.org",
        "{a}|~`!#$%&*/=?^_@x-y.z.org",
        "ａｎｎａ＠ｗｅｂ．ｄｅ",
        "anna@web.de\u00a0",
        "ünal@web.de",
        "",
        " ",
    ]
    rng = np.random.default_rng(5)
    letters = list("abcXYZ019.@+-_' \t'\"!#~") + ["\x1c", "\x0b", "é"]
    local = list("abcXYZ019abcXYZ019._+-'")
    domains = ["x", "Ab-c", "a-", "-a", "1", "gmail", "GoogleMail", "x.y"]
    tops = ["com", "De", "c", "c1", "org", "x-y"]
    ends = ["", "", "", " ", "\t", "\x1c", "\n", "\x0b", "\u00a0"]
    for _ in range(20_000):
        texts.append("".join(rng.choice(letters, int(rng.integers(1, 14)))))
        name = "".join(rng.choice(local, int(rng.integers(1, 10))))
        texts.append(
            f"{rng.choice(ends)}{name}@{rng.choice(domains)}.{rng.choice(tops)}{rng.choice(ends)}"
        )
    return texts


def test_an_email_read_in_duckdb_gets_the_value_email_gives_it() -> None:
    texts = _email_texts()
    conn = duckdb.connect()
    conn.execute("CREATE TABLE unread AS SELECT DISTINCT unnest(?) AS raw", [texts])
    read = dict(conn.execute(email_readings_sql(conn, "unread")).fetchall())
    # Every ASCII value is read there, the others are left to `email`.
    assert set(read) == {t for t in texts if t.isascii()}
    assert sum(v is not None for v in read.values()) > 5_000
    assert {t: v for t, v in read.items() if v != email(t)} == {}


@pytest.mark.parametrize(("number", "style"), list(product(NUMBERS, range(PHONE_STYLES))))
def test_every_phone_layout_gives_the_e164_number(number: tuple[int, int], style: int) -> None:
    assert phone_e164(phone_text(*number, style)) == NUMBERS[number]


@pytest.mark.parametrize(
    ("number", "style", "kind"), list(product(NUMBERS, range(PHONE_STYLES), (0, 2, 3)))
)
def test_a_prefix_an_extension_or_odd_separators_still_parse(
    number: tuple[int, int], style: int, kind: int
) -> None:
    assert phone_e164(broken_phone(phone_text(*number, style), kind)) == NUMBERS[number]


@pytest.mark.parametrize(
    ("number", "style"), list(product([n for n in NUMBERS if n[0] != 49], range(PHONE_STYLES)))
)
def test_a_us_or_chinese_number_that_lost_a_digit_is_none(
    number: tuple[int, int], style: int
) -> None:
    # German numbers vary in length, so a German one missing a digit can still be valid.
    assert phone_e164(broken_phone(phone_text(*number, style), 1)) is None


@pytest.mark.parametrize(
    ("text", "e164"),
    [
        ("15132066626", "+8615132066626"),
        ("0151 50701220", "+4915150701220"),
        ("4155550100", "+14155550100"),
        ("1 415 555 0100", "+14155550100"),
        ("011 49 151 50701220", "+4915150701220"),
        ("0044 20 7946 0958", "+442079460958"),
    ],
)
def test_a_national_number_goes_to_the_country_that_writes_it_that_way(
    text: str, e164: str
) -> None:
    assert phone_e164(text) == e164


def test_a_seven_digit_nanp_number_is_read_as_typed() -> None:
    # Canada's 310 numbers: +1 with seven digits, so the US reading of seven digits is read first.
    assert phone_e164("310-9029") == "+13109029"


def _library_reading(number: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def test_a_spelled_number_reads_as_phonenumbers_reads_it() -> None:
    # '+' and digits skips phonenumbers.parse when the reading is plain: numbers of every
    # country code, valid or not, with a leading zero or a trunk prefix ('+86 179..' is a
    # carrier code, '+7 8..' Russia's trunk prefix) or none, must all come out as the library's
    # own reading, and each number built directly must be the one it parses.
    rng = np.random.default_rng(11)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    numbers = [f"+1{n:010d}" for n in rng.integers(2_000_000_000, 10_000_000_000, 3000)]
    numbers += [
        f"+{codes[c]}{rng.choice(['', '0', '1', '8', '179'])}{n}"
        for c, n in zip(
            rng.integers(0, len(codes), 4000), rng.integers(10, 10**13, 4000), strict=True
        )
    ]
    numbers += [f"+86{n}" for n in rng.integers(13_000_000_000, 20_000_000_000, 1000)]
    numbers += [f"+49{n}" for n in rng.integers(10**9, 10**11, 1000)]
    numbers += ["+14165550123", "+18765550123", "+12025550123", "+19999999999", "+999123"]
    numbers += ["+8613912345678", "+8617912345678", "+4930123456", "+800 1234 5678", "+12"]
    numbers += ["+1202555\u0660\u0661\u0662\u0663"]  # Arabic-Indic digits: read as ASCII
    direct = 0
    for number in numbers:
        assert phone_e164(number) == _library_reading(number), number
        built = _international(number)
        if built is not None:
            direct += 1
            assert built == phonenumbers.parse(number, None), number
    assert sum(_library_reading(n) is not None for n in numbers) > 2000
    assert direct > 6000


def test_a_spelled_number_read_in_duckdb_gets_the_value_phone_e164_gives_it() -> None:
    # The library's example of every type in every region (the NANP's many countries, regions
    # sharing a calling code, non-geographic numbers), each also with its last digit changed,
    # one digit more and one fewer, and random numbers of every calling code: every number
    # _international builds is read in DuckDB, as valid exactly when phone_e164 says so.
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in phonenumbers.SUPPORTED_REGIONS
        for kind in vars(PhoneNumberType).values()
        if isinstance(kind, int)
    ]
    examples += [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
    ]
    spelled = [
        phonenumbers.format_number(n, PhoneNumberFormat.E164) for n in examples if n is not None
    ]
    numbers = [
        variant
        for n in spelled
        for variant in (n, n[:-1] + str((int(n[-1]) + 3) % 10), n + "5", n[:-1])
    ]
    rng = np.random.default_rng(17)
    codes = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
    numbers += [
        f"+{codes[c]}{n}"
        for c, n in zip(
            rng.integers(0, len(codes), 3000), rng.integers(10, 10**12, 3000), strict=True
        )
    ]
    numbers += ["+0123", "+12", "+999123", "+1 415 555 0100", "tel:+14155550100", "+8617912345678"]
    conn = duckdb.connect()
    conn.execute("CREATE TABLE spelled (raw VARCHAR)")
    conn.executemany("INSERT INTO spelled VALUES (?)", [[n] for n in numbers])
    read = dict(conn.execute(international_readings_sql(conn, "spelled")).fetchall())
    assert set(read) == {n for n in numbers if _international(n) is not None}
    assert read == {n: phone_e164(n) for n in read}
    assert sum(v is not None for v in read.values()) > 1500
    assert len(spelled) > 1000


def test_a_number_read_alike_in_two_regions_goes_to_the_earlier_region() -> None:
    assert phone_e164("0415 555 0100") == "+864155550100"
    assert phone_e164("0415 555 0100", regions=("DE", "CN")) == "+494155550100"


@pytest.mark.parametrize("text", ["(415) 555-010", "+1 415 555 01", "12345", "n/a", "", None])
def test_a_number_no_region_holds_is_none(text: str | None) -> None:
    assert phone_e164(text) is None


def _write_names(
    first: list[str], last: list[str], roman: list[tuple[str, str]], chinese: bool
) -> list[list[str]]:
    """Every spelling style of each name, written by the generator's own `full_names`."""
    n = len(first)
    pools = SimpleNamespace(
        locales=("zh_CN" if chinese else "en_US",),
        first=np.array(first, dtype=object),
        last=np.array(last, dtype=object),
        first_roman=np.array([f for f, _ in roman], dtype=object),
        last_roman=np.array([la for _, la in roman], dtype=object),
    )
    who = np.arange(n)
    pop = SimpleNamespace(first=who, last=who, middle=who % 26, locale=np.zeros(n, dtype=int))
    styles = [full_names(pools, pop, who, np.full(n, s)) for s in range(NAME_STYLES)]
    return [[str(names[i]) for names in styles] for i in range(n)]


def test_every_style_of_every_generated_chinese_name_gives_one_pinyin_key() -> None:
    pairs = list(product(ZH_SURNAMES, ZH_GIVEN_FEMALE + ZH_GIVEN_MALE))
    written = _write_names(
        [g for _, (g, _) in pairs],
        [s for (s, _), _ in pairs],
        [(gp, sp) for (_, sp), (_, gp) in pairs],
        chinese=True,
    )
    for ((_, surname), (_, given)), spellings in zip(pairs, written, strict=True):
        expected = " ".join(sorted((surname.lower(), given.lower())))
        assert {name_key(s) for s in spellings} == {expected}, spellings


def test_the_five_styles_of_a_chinese_name_are_the_ones_expected() -> None:
    assert _write_names(["秀英"], ["王"], [("Xiuying", "Wang")], chinese=True) == [
        ["王秀英", "Wang Xiuying", "WANG Xiuying", "Xiuying Wang", "王 秀英"]
    ]


def test_every_style_of_a_latin_name_gives_one_key() -> None:
    first = ["Anna", "Jürgen", "Seán", "Anna-Lena", "Mary"]
    last = ["Berg", "Müller", "O'Brien", "Schäfer", "McDonald"]
    written = _write_names(first, last, [("", "")] * len(first), chinese=False)
    keys = [{name_key(s) for s in spellings} for spellings in written]
    assert keys == [
        {"anna berg"},
        {"jurgen muller"},
        {"obrien sean"},
        {"annalena schafer"},
        {"mary mcdonald"},
    ]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("Berg, Anna K.", "anna berg"),
        ("ANNA  K  BERG", "anna berg"),
        ("欧阳秀英", "ouyang xiuying"),
        ("单伟", "shan wei"),
        ("A. Berg", "a berg"),
        ("", None),
        ("  ", None),
        (None, None),
    ],
)
def test_a_name_key_drops_middle_initials_order_and_case_and_romanises_han_names(
    text: str | None, key: str | None
) -> None:
    assert name_key(text) == key


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Berg, Anna", "Anna Berg"),
        ("ANNA BERG", "Anna Berg"),
        ("anna   berg ", "Anna Berg"),
        ("Anna K. Berg", "Anna K. Berg"),
        ("SEÁN O'BRIEN", "Seán O'Brien"),
        ("Mary McDonald", "Mary McDonald"),
        ("John Smith III", "John Smith III"),
        ("Smith, Jr.", "Smith, Jr."),
        ("WANG Wei", "Wang Wei"),
        ("王 伟", "王伟"),
        ("王伟", "王伟"),
        ("", None),
        (None, None),
    ],
)
def test_full_name_is_the_display_form(text: str | None, shown: str | None) -> None:
    assert full_name(text) == shown


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("  12  Main   Street ", "12 Main Street"),
        ("Hauptstraße\t7", "Hauptstraße 7"),
        ("中山路１２号", "中山路12号"),
        (" ", None),
        (None, None),
    ],
)
def test_address_is_trimmed_with_single_spaces(text: str | None, clean: str | None) -> None:
    assert address(text) == clean


def test_over_distinct_calls_once_per_value_and_keeps_index_and_nulls() -> None:
    calls: list[str | None] = []

    def upper(text: str | None) -> str | None:
        calls.append(text)
        return None if text == "bad" else str(text).upper()

    values = pd.Series(["a", None, "b", "a", "bad", np.nan], index=[10, 11, 12, 13, 14, 15])
    result = over_distinct(values, upper)
    assert sorted(calls) == ["a", "b", "bad"]
    assert result.index.tolist() == [10, 11, 12, 13, 14, 15]
    assert result.tolist() == ["A", None, "B", "A", None, None]


def test_over_distinct_of_an_empty_column_is_empty() -> None:
    assert over_distinct(pd.Series([], dtype=object), email).empty
