"""Canonical forms of the contact fields each source writes its own way: email, name, address
(phones: crm_pipeline/staging/phones.py).

Staging keeps the source value and adds these forms next to it, so the same mailbox, number or
person written differently by two systems compares equal. Every function takes one value and
returns None for a value that cannot be read; `over_distinct` applies one to a column.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

import duckdb
import numpy as np
import pandas as pd
from anyascii import anyascii

_EMAIL = re.compile(
    r"(?P<local>[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,})"
)
_GMAIL = frozenset({"gmail.com", "googlemail.com"})
_WHITESPACE = re.compile(r"\s")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_HAN_CHAR = re.compile(f"[{_HAN}]")
_HAN_NAME = re.compile(f"[{_HAN}]+")
_SPACE_BETWEEN_HAN = re.compile(f"(?<=[{_HAN}])\\s+(?=[{_HAN}])")
# Apostrophes and hyphens join ("O'Brien", "Anna-Lena"); any other punctuation separates.
_JOINERS = re.compile(r"['’`-]")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
# After a comma these are a suffix ("Smith, Jr."), not the given name of a "Last, First" form.
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "phd", "md"})
_ROMAN_NUMERALS = frozenset({"II", "III", "IV", "VI", "VII", "VIII"})
_COMPOUND_SURNAMES = frozenset(
    {"欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "夏侯", "长孙"}
    | {"宇文", "司徒", "万俟", "轩辕", "端木", "独孤", "南宫", "西门"}
)
# pypinyin picks the everyday reading; as surnames these characters are read differently.
_SURNAME_READINGS = {
    "单": "shan",
    "曾": "zeng",
    "解": "xie",
    "仇": "qiu",
    "朴": "piao",
    "区": "ou",
    "查": "zha",
    "盖": "ge",
    "覃": "qin",
    "缪": "miao",
    "翟": "zhai",
    "尉迟": "yuchi",
    "万俟": "moqi",
}


def nfkc(text: str) -> str:
    # Most values are plain ASCII, which NFKC leaves unchanged; skipping it saves the call.
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def email(text: str | None) -> str | None:
    """The canonical mailbox ('Anna.Berg+shop@Gmail.com' -> 'annaberg@gmail.com'), or None."""
    if text is None:
        return None
    text = nfkc(text).strip().lower()
    # Inner whitespace is not a typo to repair: "anna gmail.com" is what a lost '@' looks like.
    if _WHITESPACE.search(text):
        return None
    match = _EMAIL.fullmatch(text)
    if match is None:
        return None
    local, domain = match["local"], match["domain"]
    local = local.partition("+")[0]
    if domain in _GMAIL:
        # Gmail delivers 'a.n.n.a' to 'anna', and googlemail.com is the same service.
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}" if local else None


# What str.strip() removes from ASCII text, and `_WHITESPACE` finds in it (str.isspace).
_ASCII_SPACE = "".join(c for c in map(chr, range(128)) if c.isspace())


def email_readings_sql(_: duckdb.DuckDBPyConnection, values: str) -> str:
    """SQL giving (raw, value) for the ASCII values of `values` (a table or query with a text
    column `raw`): `email`'s value for each, read in DuckDB rather than one at a time. On ASCII
    text NFKC changes nothing, and Python's strip, lower-casing and whitespace are those of
    the ASCII characters, so each step is the same in SQL; `_EMAIL` is a plain RE2 pattern.
    Other values are left out, for `email` itself."""
    space = " || ".join(f"chr({ord(c)})" for c in _ASCII_SPACE)
    spaced = "[" + "".join(f"\\x{ord(c):02X}" for c in _ASCII_SPACE) + "]"
    gmail = ", ".join(f"'{domain}'" for domain in sorted(_GMAIL))
    return f"""
        WITH parsed AS (
            SELECT raw, regexp_extract(text, {sql_regex(f"^(?:{_EMAIL.pattern})$")},
                                       ['local', 'domain']) AS part,
                   regexp_matches(text, '{spaced}') AS spaced
            FROM (
                SELECT raw, lower(trim(raw, {space})) AS text
                FROM {values}
                WHERE NOT regexp_matches(raw, '[^\\x00-\\x7F]')
            )
        ), mailbox AS (
            SELECT raw, spaced,
                   CASE WHEN part.domain IN ({gmail})
                        THEN replace(split_part(part.local, '+', 1), '.', '')
                        ELSE split_part(part.local, '+', 1) END AS local,
                   CASE WHEN part.domain IN ({gmail}) THEN 'gmail.com' ELSE part.domain END
                       AS domain
            FROM parsed
        )
        SELECT raw, CASE WHEN NOT spaced AND local <> '' THEN local || '@' || domain END AS value
        FROM mailbox
    """


def sql_regex(pattern: str, anchor: str = "") -> str:
    """A pattern as a SQL literal, anchored at the start ('^') for a prefix match."""
    text = f"^(?:{pattern})" if anchor else pattern
    return "'" + text.replace("'", "''") + "'"


def full_name(text: str | None) -> str | None:
    """The name as shown to people: 'BERG, ANNA' -> 'Anna Berg', '王 伟' -> '王伟'."""
    if text is None:
        return None
    text = " ".join(nfkc(text).split())
    if not text:
        return None
    text = " ".join(_given_first(text))
    if not text.isascii():
        text = _SPACE_BETWEEN_HAN.sub("", text)
    if text == text.lower():
        return text.title()
    # A family name in capitals ('WANG Wei') is a convention, not the spelling of the name.
    return " ".join(
        t.title() if t.isupper() and len(t) > 1 and t not in _ROMAN_NUMERALS else t
        for t in text.split(" ")
    )


def _given_first(text: str) -> list[str]:
    """'Berg, Anna K.' -> ['Anna', 'K.', 'Berg']; names without one comma keep their order."""
    last, comma, given = text.partition(",")
    given = given.strip()
    if not comma or "," in given or not given or _NOT_ALNUM.sub("", given.lower()) in _SUFFIXES:
        return text.split(" ")
    return given.split(" ") + last.strip().split(" ")


def name_key(text: str | None) -> str | None:
    """A key equal for one person's spellings: 'Berg, Anna K.' and 'anna berg' -> 'anna berg'.

    Han names become toneless pinyin with the given name as one word, so '王秀英', '王 秀英'
    and 'Xiuying Wang' all give 'wang xiuying'; tokens are sorted because systems disagree on
    which name comes first.
    """
    if text is None:
        return None
    text = nfkc(text).strip()
    if not text.isascii():
        if _HAN_CHAR.search(text):
            text = _HAN_NAME.sub(_pinyin, text)
        text = anyascii(text)
    tokens = _NOT_ALNUM.sub(" ", _JOINERS.sub("", " ".join(_given_first(text)).lower())).split()
    if len(tokens) > 2:
        # A middle initial is written by some systems and not others.
        tokens = [tokens[0], *(t for t in tokens[1:-1] if len(t) > 1), tokens[-1]]
    return " ".join(sorted(tokens)) or None


def _pinyin(match: re.Match[str]) -> str:
    """A Han run as the romanised name: '王秀英' -> ' wang xiuying ', '秀英' in '王 秀英' -> ' xiuying '.

    A name written without spaces is split after its surname so the given name stays one word,
    as in 'Wang Xiuying'.
    """
    han = match.group()
    if match.start() > 0 or match.end() < len(match.string):
        return f" {_surname_reading(han) if match.start() == 0 else _reading(han)} "
    cut = 2 if len(han) > 2 and han[:2] in _COMPOUND_SURNAMES else 1
    return f" {_surname_reading(han[:cut])} {_reading(han[cut:])} "


def _reading(han: str) -> str:
    # Imported on first use: its dictionaries take half a second to load, and most processes
    # that import this module (every Dagster step) never meet a Chinese name.
    from pypinyin import lazy_pinyin

    return "".join(lazy_pinyin(han, v_to_u=True))


def _surname_reading(han: str) -> str:
    return _SURNAME_READINGS.get(han) or _reading(han)


def address(text: str | None) -> str | None:
    """The address trimmed with single spaces, or None when empty."""
    if text is None:
        return None
    return " ".join(nfkc(text).split()) or None


def over_distinct(values: pd.Series, fn: Callable[[str | None], str | None]) -> pd.Series:
    """`fn` applied once per distinct non-null value and mapped back; nulls stay None.

    Contact columns repeat heavily (one customer, many rows), so this is much faster than
    `values.map(fn)` at millions of rows.
    """
    codes, uniques = pd.factorize(values)
    # Code -1 marks a null; it picks the None appended after the results.
    results = np.empty(len(uniques) + 1, dtype=object)
    results[:-1] = [fn(v) for v in uniques]
    return pd.Series(results[codes], index=values.index, name=values.name, dtype=object)
