"""Phone numbers in E.164, read as phonenumbers reads them: a number written with '+' or '00'
and its country code as it says, one written nationally as the first of the business's
countries that holds it (CRM_PHONE_REGIONS). Most values are read in DuckDB, all at once
(phone_spellings_sql, international_readings_sql); phone_e164 reads the rest, one at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache

import duckdb
import phonenumbers
from phonenumbers import NumberParseException, PhoneMetadata, PhoneNumberFormat

from crm_pipeline.staging.normalise import nfkc, sql_regex

_PHONE_START = re.compile(r"[+\d]")
_NON_DIGIT = re.compile(r"\D")
_PLAIN_PHONE = re.compile(r"[\d ().-]*")
# '+' and digits only, as phone_spellings_sql spells most numbers ('+14155550100').
_INTERNATIONAL_SPELLED = re.compile(r"\+[1-9][0-9]{2,63}")
# phonenumbers' bounds on a national number's length.
_MIN_NATIONAL, _MAX_NATIONAL = 2, 17

# The regions whose national numbers (typed without a country code) phone_e164 reads, in order:
# the demo's, and the default of CRM_PHONE_REGIONS.
DEFAULT_PHONE_REGIONS = ("US", "CN", "DE")


def phone_e164(text: str | None, regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> str | None:
    """The number in E.164 ('(415) 555-0100' -> '+14155550100'), or None when not valid.

    A number without an international prefix is read in each of `regions`. The reading wins
    whose national format has exactly the typed digits ('15132066626' is a Chinese mobile, not
    US '1' + 513...; '0151 50701220' is German, not a Chinese mobile behind a '0'); failing
    that, the first reading that dropped a leading trunk prefix ('1 415 555 0100'). A reading
    that needs a prefix nobody typed is refused: '415555010' is a US number that lost a digit,
    not a German number without its '0'. Ties go to the earlier region.
    """
    if text is None:
        return None
    text = nfkc(text)
    start = _PHONE_START.search(text)
    if start is None:
        return None
    number = text[start.start() :]
    if number.startswith("00"):
        # '00' is the IDD of China and Germany; as '+' it reads the same from any region.
        number = "+" + number[2:]
    international = _international(number)
    if international is not None:
        # Most spellings read: what phonenumbers.parse would build, at a fraction of the cost,
        # and its E.164 is the spelling itself.
        return number if _valid(international) else None
    if number.startswith("+"):
        parsed = _parse(number, None)
        if parsed is None or not _valid(parsed):
            return None
        return _e164(parsed)
    typed = _NON_DIGIT.sub("", number)
    fallbacks: dict[int, phonenumbers.PhoneNumber] = {}
    later = []
    for order, region in enumerate(regions):
        if not _as_typed(region, number, typed):
            # Its reading could only be the fallback: read it only if that is needed (a
            # Chinese mobile typed nationally then costs half as much).
            later.append((order, region))
            continue
        e164, fallback = _read_in(region, number, typed)
        if e164 is not None:
            return e164
        if fallback is not None:
            fallbacks[order] = fallback
    for order, region in later:
        if not fallbacks or order < min(fallbacks):
            _, fallback = _read_in(region, number, typed)
            if fallback is not None:
                fallbacks[order] = fallback
    return _e164(fallbacks[min(fallbacks)]) if fallbacks else None


phone_e164.phone_regions = DEFAULT_PHONE_REGIONS


@cache
def phone_reader(regions: tuple[str, ...]) -> Callable[[str | None], str | None]:
    """phone_e164 reading national numbers in `regions`, as a normaliser: phone_e164 itself
    for the default regions, else one named for its regions, so values read with other regions
    are cached apart."""
    if regions == DEFAULT_PHONE_REGIONS:
        return phone_e164

    def read(text: str | None) -> str | None:
        return phone_e164(text, regions)

    read.__name__ = "phone_e164_" + "_".join(regions)
    read.phone_regions = regions
    return read


def _international(number: str) -> phonenumbers.PhoneNumber | None:
    """The number phonenumbers.parse reads from '+' and digits, built directly, when the reading
    is plain: a known country code, then a national number with no leading zero that the
    country's trunk-prefix rule does not match (where it matches, parse may strip it). None:
    leave it to phonenumbers.parse."""
    if _INTERNATIONAL_SPELLED.fullmatch(number) is None:
        return None
    # As parse does: the shortest leading digits that are a country code.
    for size in (1, 2, 3):
        country_code = int(number[1 : 1 + size])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    national = number[1 + size :]
    trunk_prefix = _trunk_prefix(country_code)
    if (
        not _MIN_NATIONAL <= len(national) <= _MAX_NATIONAL
        or national[0] == "0"
        or (trunk_prefix is not None and trunk_prefix.match(national))
    ):
        return None
    return phonenumbers.PhoneNumber(country_code=country_code, national_number=int(national))


@cache
def _trunk_prefix(country_code: int) -> re.Pattern[str] | None:
    """What phonenumbers.parse may strip from the start of the country's national numbers."""
    region = phonenumbers.region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    return re.compile(pattern) if pattern else None


def _read_in(
    region: str, number: str, typed: str
) -> tuple[str | None, phonenumbers.PhoneNumber | None]:
    """The region's reading of a national number: its E.164 when the reading settles it, or
    the number as a fallback when the reading dropped a trunk prefix the typist wrote."""
    parsed = _parse(number, region)
    if parsed is None or not _valid(parsed):
        return None, None
    if parsed.country_code != phonenumbers.country_code_for_region(region):
        # Read through that region's own IDD ('011 49 ...' from the US): international.
        return _e164(parsed), None
    written = _national_digits(parsed, region)
    if typed == written:
        return _e164(parsed), None
    if len(typed) > len(written) and typed.endswith(written):
        return None, parsed
    return None, None


def _as_typed(region: str, number: str, typed: str) -> bool:
    """Whether the region could take a national number as typed, not only as a fallback.

    A region that writes no trunk prefix writes a number as its national digits, and a valid
    number has a length that its calling code's regions allow ({7, 10} for '+1'): a plain
    number (no room for an extension) of another length is not one of them as typed, unless it
    starts with the region's IDD.
    """
    if _writes_trunk_prefix(region) or _PLAIN_PHONE.fullmatch(number) is None:
        return True
    idd = PhoneMetadata.metadata_for_region(region).international_prefix
    return len(typed) in _lengths(region) or bool(idd and re.match(idd, typed))


@cache
def _lengths(region: str) -> frozenset[int]:
    """The lengths of a valid national number in any region sharing the region's calling code."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[phonenumbers.country_code_for_region(region)]
    return frozenset(
        length
        for other in regions
        if (metadata := PhoneMetadata.metadata_for_region(other)) is not None
        for length in metadata.general_desc.possible_length
    )


def _parse(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        return phonenumbers.parse(number, region)
    except NumberParseException:
        return None


def _valid(parsed: phonenumbers.PhoneNumber) -> bool:
    # The length check is cheap and rejects most wrong regions before the costly pattern match,
    # which for '+1' also tries every NANP country.
    if not phonenumbers.is_possible_number(parsed):
        return False
    # is_valid_number finds a '+1' number's region by the patterns of each NANP country, the
    # US's first, then matches them again: a number the US's patterns match is valid at once.
    if parsed.country_code == 1 and phonenumbers.is_valid_number_for_region(parsed, "US"):
        return True
    return phonenumbers.is_valid_number(parsed)


def _national_digits(parsed: phonenumbers.PhoneNumber, region: str) -> str:
    """The digits the region itself writes for the number, trunk prefix and extension included."""
    if not _writes_trunk_prefix(region):
        # Formatting costs as much as parsing; a region that never writes a prefix needs none.
        return phonenumbers.national_significant_number(parsed) + (parsed.extension or "")
    return _NON_DIGIT.sub("", phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL))


@cache
def _writes_trunk_prefix(region: str) -> bool:
    metadata = PhoneMetadata.metadata_for_region(region)
    return metadata is None or any(
        f.national_prefix_formatting_rule for f in metadata.number_format
    )


def _e164(parsed: phonenumbers.PhoneNumber) -> str:
    # E.164 has no room for an extension, so 'ext. 12' is dropped here.
    return phonenumbers.format_number(parsed, PhoneNumberFormat.E164)


def phone_spellings_sql(values: str, regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> str:
    """SQL giving each `raw` of `values` a spelling `phone_e164` reads as it reads the value,
    and whether it always does (`exact`).

    phonenumbers reads digits only, so a plain value (digits, spaces, '-', '.', parentheses, one
    leading '+' or '00') with its punctuation dropped reads the same: '(415) 555-0100' as
    '4155550100', '0049 30 1234567' as '+49301234567', and '+49 (0)30 1234567' as '+49301234567'
    too (phonenumbers drops a trunk '0' written after '+49'). A US-shaped national number
    ('415 555 0100') reads as '+14155550100' when that number is valid, since phone_e164 tries
    the US first and then finds the digits as typed; a Chinese mobile typed nationally
    ('139 1234 5678', eleven digits from '13' to '19') reads as '+8613912345678' when that
    number is valid, since with the default regions (US, CN, DE) eleven digits are a US number
    only as a fallback (a trunk '1' dropped), after an exact reading, and China writes its
    mobiles without a trunk prefix. A German mobile typed nationally ('0151 50701220', eleven or
    twelve digits from '015' to '017') reads as '+4915150701220' when that number is valid:
    Germany writes every such number with its trunk '0', so its reading is exact, and China
    reads it only as a fallback (its mobiles without the '0'), the US not at all. When such a
    number is not valid, the value must be read itself, as other regions may take it. Anything
    else is its own spelling. Spellings let one parse serve every way a number is typed. With
    other regions than the default, a national number is spelled by its digits alone.
    """
    shaped = regions == DEFAULT_PHONE_REGIONS
    return f"""
        SELECT
            raw,
            CASE
                WHEN NOT plain THEN raw
                -- '+49 (0)30 1234567': phonenumbers drops the trunk '0' behind the code.
                WHEN prefix <> '' AND regexp_matches(international, '^490[1-9]')
                    THEN '+49' || international[4:]
                WHEN prefix <> '' THEN '+' || international
                WHEN us_shaped THEN '+1' || digits
                WHEN cn_mobile_shaped THEN '+86' || digits
                WHEN de_mobile_shaped THEN '+49' || digits[2:]
                ELSE digits
            END AS spelling,
            NOT (plain AND prefix = '' AND (us_shaped OR cn_mobile_shaped OR de_mobile_shaped))
                AS exact
        FROM (
            SELECT
                raw,
                digits,
                prefix,
                -- phonenumbers takes 250 characters, and needs three digits once punctuation
                -- stands between them.
                length(raw) <= 64
                    AND length(digits) >= 3
                    AND regexp_full_match(raw, '\\(?(\\+|00)?[0-9 ().-]*')
                    -- '0 049' is national to phone_e164, but its digits start with an IDD.
                    AND NOT (prefix = '' AND starts_with(digits, '00')) AS plain,
                {shaped} AND length(digits) = 10 AND digits[1] BETWEEN '2' AND '9' AS us_shaped,
                {shaped} AND length(digits) = 11 AND digits[1] = '1'
                    AND digits[2] BETWEEN '3' AND '9' AS cn_mobile_shaped,
                {shaped} AND length(digits) IN (11, 12) AND starts_with(digits, '01')
                    AND digits[3] BETWEEN '5' AND '7' AS de_mobile_shaped,
                CASE prefix WHEN '+' THEN digits WHEN '00' THEN digits[3:] END AS international
            FROM (
                SELECT
                    raw,
                    regexp_replace(raw, '[^0-9]', '', 'g') AS digits,
                    -- phone_e164 drops a '(' before the first digit too.
                    CASE
                        WHEN starts_with(raw, '+') OR starts_with(raw, '(+') THEN '+'
                        WHEN starts_with(raw, '00') OR starts_with(raw, '(00') THEN '00'
                        ELSE ''
                    END AS prefix
                FROM ({values})
            )
        )
    """


def international_readings_sql(conn: duckdb.DuckDBPyConnection, values: str) -> str:
    """SQL giving (raw, value) for the values of `values` (a table or query with a text column
    `raw`) that are plain international spellings ('+' and digits that `_international`
    builds): `phone_e164`'s value for each, read in DuckDB rather than one number at a time.

    The value is the spelling when the number is valid, else NULL, decided as phonenumbers
    decides it (`_valid`): its length is possible for the calling code's main region, and the
    region that holds it (the first of the calling code's regions whose leading digits start
    the number, or, for a region without leading digits, whose patterns take it) has a number
    type whose length and pattern it matches. The patterns are the library's own metadata,
    each a constant RE2 expression over every number at once. Values that are not plain
    spellings are left out, for `phone_e164` itself.
    """
    spelled = f"""
        SELECT raw, cc, substr(raw, 2 + length(cc)) AS national
        FROM (
            SELECT raw, {_country_code_sql("substr(raw, 2)")} AS cc
            FROM {values}
            WHERE regexp_full_match(raw, '\\+[1-9][0-9]{{2,63}}')
        )
        WHERE cc IS NOT NULL
    """
    codes = sorted(
        int(c) for (c,) in conn.execute(f"SELECT DISTINCT cc FROM ({spelled})").fetchall()
    )
    if not codes:
        return "SELECT NULL::VARCHAR AS raw, NULL::VARCHAR AS value WHERE FALSE"
    plain = " OR ".join(_plain_national_sql(code) for code in codes)
    valid = " ".join(f"WHEN '{code}' THEN {_valid_national_sql(code)}" for code in codes)
    return f"""
        SELECT raw, CASE WHEN CASE cc {valid} END THEN raw END AS value
        FROM ({spelled})
        WHERE length(national) BETWEEN {_MIN_NATIONAL} AND {_MAX_NATIONAL}
          AND national[1] <> '0'
          AND ({plain})
    """


def _country_code_sql(digits: str) -> str:
    """As `_international` finds it: the shortest leading digits that are a calling code."""
    by_size: dict[int, list[str]] = {}
    for code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
        by_size.setdefault(len(str(code)), []).append(f"'{code}'")
    whens = " ".join(
        f"WHEN left({digits}, {size}) IN ({', '.join(sorted(codes))}) THEN left({digits}, {size})"
        for size, codes in sorted(by_size.items())
    )
    return f"CASE {whens} END"


def _plain_national_sql(code: int) -> str:
    """The calling code's national numbers `_international` builds: no trunk prefix to strip."""
    trunk_prefix = _trunk_prefix(code)
    if trunk_prefix is None:
        return f"cc = '{code}'"
    return (
        f"(cc = '{code}' AND NOT regexp_matches(national, {sql_regex(trunk_prefix.pattern, '^')}))"
    )


def _valid_national_sql(code: int) -> str:
    """Whether a national number of the calling code is valid, as `_valid` decides it."""
    main = PhoneMetadata.metadata_for_region_or_calling_code(
        code, phonenumbers.region_code_for_country_code(code)
    )
    lengths = (*main.general_desc.possible_length, *main.general_desc.possible_length_local_only)
    possible = f"length(national) IN ({', '.join(str(n) for n in sorted(set(lengths)))})"
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[code]
    if len(regions) == 1:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, regions[0])
        return f"({possible} AND {_typed_sql(metadata)})"
    holds = []
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            starts = f"regexp_matches(national, {sql_regex(metadata.leading_digits, '^')})"
            holds.append(f"WHEN {starts} THEN {_typed_sql(metadata)}")
        else:
            holds.append(f"WHEN {_typed_sql(metadata)} THEN TRUE")
    return f"({possible} AND CASE {' '.join(holds)} ELSE FALSE END)"


def _typed_sql(metadata: PhoneMetadata | None) -> str:
    """Whether the region has a number type the national number matches (not UNKNOWN)."""
    if metadata is None:
        return "FALSE"
    types = [
        metadata.premium_rate,
        metadata.toll_free,
        metadata.shared_cost,
        metadata.voip,
        metadata.personal_number,
        metadata.pager,
        metadata.uan,
        metadata.voicemail,
        metadata.fixed_line,
    ]
    if not metadata.same_mobile_and_fixed_line_pattern:
        types.append(metadata.mobile)
    matching = [sql for desc in types if (sql := _desc_sql(desc)) is not None]
    general = _desc_sql(metadata.general_desc)
    if general is None or not matching:
        return "FALSE"
    return f"({general} AND ({' OR '.join(matching)}))"


def _desc_sql(desc: phonenumbers.PhoneNumberDesc | None) -> str | None:
    """Whether the national number matches the description's lengths and pattern; None: never."""
    if desc is None or not desc.national_number_pattern:
        return None
    full = f"regexp_full_match(national, {sql_regex(desc.national_number_pattern)})"
    if not desc.possible_length:
        return full
    lengths = ", ".join(str(n) for n in desc.possible_length)
    return f"(length(national) IN ({lengths}) AND {full})"
