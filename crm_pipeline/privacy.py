"""Erasure on request: a customer's personal data removed from every copy in the warehouse,
and kept out of later loads of the same records.

A request names customers (by key, email, phone, account id or loyalty card). Every source
record the crosswalk gives them is erased: the columns the contracts tag as personal data are
set to NULL in raw and staging, the quarantine records of those rows and the rows raw rejected
that quote their values (in any case, a phone however typed) lose them, and a delivered
record staging set aside that gives one of their emails or phones is erased with them; the
normaliser cache forgets the values,
core.identity_groups the digests of the records' values, and core's golden record and survey
comments lose them. The records are listed in raw.erased_records, and each later load of raw
blanks them again as it lands them (an account snapshot read again from the shop, a past day
run again); a customer excluded as a test or staff account stays excluded. raw.erasures logs
each request without personal data. Orders, visits and answers stay, under a pseudonymous key;
ids (account, card, receipt) are pseudonymous and stay. What a later load cannot recognise as
theirs comes back until the deliveries are redacted: a line the raw layer rejects, a row
without its id.

The landing zone is the user's: the files that still hold the records are named, to be
redacted at the source. The warehouse file is then rewritten with only its live data (an
update leaves the old values in free blocks of the file until they are reused), and the
published copy is replaced.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import phonenumbers

from crm_pipeline import as_private_as, replace_file
from crm_pipeline.core.crosswalk import GROUPS
from crm_pipeline.core.schemas import CORE_MODELS
from crm_pipeline.raw.schemas import RAW_MODELS
from crm_pipeline.raw.tables import ddl, id_text, quote_ident, quote_literal, table_exists
from crm_pipeline.reporting import personal_columns
from crm_pipeline.staging import normalise
from crm_pipeline.staging.build import MERGED_TABLE, REJECTS_TABLE
from crm_pipeline.staging.lookups import CACHE_TABLE
from crm_pipeline.staging.phones import DEFAULT_PHONE_REGIONS, phone_reader
from crm_pipeline.staging.schemas import STAGING_MODELS

# The sources whose records carry personal data, by their id column (the crosswalk's source
# id); orders and their items carry none.
ERASABLE = {
    "online_accounts": "account_id",
    "loyalty_members": "card_no",
    "store_purchases": "receipt_id",
    "inquiries": "inquiry_id",
    "feedback": "response_id",
}
ERASED_RECORDS = "raw.erased_records"
ERASURES = "raw.erasures"
RAW_REJECTS = "quarantine.raw_rejects"
CROSSWALK = "core.customer_crosswalk"
# Core tables with personal data, and the column that says whose row it is.
CORE_ROWS = {"customers": "customer_key", "feedback": "customer_key"}
# Shorter values (an initial, a two-digit extension) are too common to look for in free text.
SHORTEST_QUOTED = 4
# The personal values looked for in free text (a line set aside, a record quarantine keeps):
# what tells a person apart. A birth day, an income, a city or a comment ('good') is shared
# by many, and found in another's record would strip theirs.
QUOTED_COLUMNS = frozenset({"email", "phone", "full_name", "address"})
# A date and time, taken out of a text before phones are looked for in it: its digits run on
# ('2025-01-17 09' reads as 2025011709, a valid number).
_DATE_TIME = r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?"
# A phone as typed: digits, spaces, brackets, dots and dashes, a + before.
_PHONE_RUN = r"[+(]?\d[\d ().\-]{5,}\d"
# SQL: whether a text ({0}) quotes one of the erased values, in any case and as a whole (not
# inside a longer address: bo@example.com is not in jumbo@example.com), by $pattern (see
# Quoted); or gives one of their phones, a run of digits as typed whose digits are one of
# the number's forms ($phones: 2137971182, 12137971182, 0012137971182, ...).
QUOTING = (
    "(regexp_matches(lower(CAST({0} AS VARCHAR)), $pattern) "
    "OR list_has_any([regexp_replace(r, '\\D', '', 'g') FOR r IN regexp_extract_all("
    "regexp_replace(CAST({0} AS VARCHAR), $date_time, ' ', 'g'), $phone_run)], $phones))"
)


@dataclass(frozen=True)
class Quoted:
    """What the erased records' values look like in free text: a pattern that finds any of
    them in lower case (DuckDB's, as the text is lowered), between characters no email or
    word goes on with; and the digit forms of their phones."""

    pattern: str | None
    phones: list[str]

    @staticmethod
    def of(conn: duckdb.DuckDBPyConnection, values: list[str], phones: list[str]) -> Quoted:
        lowered = conn.execute(
            "SELECT list_distinct([lower(v) FOR v IN $values])", {"values": values}
        ).fetchall()[0][0]
        if not lowered:
            return Quoted(None, phones)
        either = "|".join(re.escape(v) for v in sorted(lowered, key=len, reverse=True))
        pattern = (
            r"(?:^|[^\pL\pN._%+\-@])(?:" + either + r")"
            r"(?:$|[^\pL\pN_%+\-@.]|\.(?:$|[^\pL\pN]))"
        )
        return Quoted(pattern, phones)

    def __bool__(self) -> bool:
        return bool(self.pattern or self.phones)

    def params(self) -> dict:
        return {
            "pattern": self.pattern,
            "phones": self.phones,
            "date_time": _DATE_TIME,
            "phone_run": _PHONE_RUN,
        }


@dataclass(frozen=True)
class Request:
    """Who is to be erased: any mix of identifiers, as typed (emails and phones are
    normalised as staging normalises them)."""

    customer_keys: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    account_ids: tuple[str, ...] = ()
    cards: tuple[str, ...] = ()
    # Where a phone without its country code is read (the warehouse's CRM_PHONE_REGIONS).
    phone_regions: tuple[str, ...] = DEFAULT_PHONE_REGIONS


@dataclass(frozen=True)
class Erasure:
    """What a request erased: its id, the customers and records, the landing files that still
    hold those records."""

    request_id: str
    customer_keys: list[str]
    records: int
    landing_files: list[str]


ERASED_RECORDS_COLUMNS = {
    "source": "VARCHAR NOT NULL",
    "source_id": "VARCHAR NOT NULL",
    "excluded_as": "VARCHAR",
    "request_id": "VARCHAR NOT NULL",
    "erased_at": "TIMESTAMP NOT NULL",
}
ERASURES_COLUMNS = {
    "request_id": "VARCHAR NOT NULL",
    "erased_at": "TIMESTAMP NOT NULL",
    "reason": "VARCHAR NOT NULL",
    "customers": "BIGINT NOT NULL",
    "records": "BIGINT NOT NULL",
}


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
    conn.execute(ddl(ERASED_RECORDS, ERASED_RECORDS_COLUMNS))
    conn.execute(ddl(ERASURES, ERASURES_COLUMNS))


def customers_of(conn: duckdb.DuckDBPyConnection, request: Request) -> list[str]:
    """The customer keys a request names (none when nothing matches)."""
    emails = sorted({e for e in map(normalise.email, request.emails) if e})
    phones = sorted({p for p in map(phone_reader(request.phone_regions), request.phones) if p})
    # A receipt gives a phone (and a card), never an email.
    contacts = " UNION ".join(
        f"SELECT '{source}' AS source, {id_column} AS source_id FROM staging.{source} "
        "WHERE list_contains($phones, phone)"
        + ("" if source == "store_purchases" else " OR list_contains($emails, email)")
        for source, id_column in ERASABLE.items()
    )
    found = conn.execute(
        f"""
        SELECT DISTINCT x.customer_key
        FROM {CROSSWALK} AS x
        LEFT JOIN ({contacts}) AS c USING (source, source_id)
        WHERE c.source_id IS NOT NULL
           OR list_contains($keys, x.customer_key)
           OR (x.source = 'online_accounts' AND list_contains($accounts, x.source_id))
           OR (x.source = 'loyalty_members' AND list_contains($cards, x.source_id))
        ORDER BY 1
        """,
        {
            "emails": emails,
            "phones": phones,
            "keys": list(request.customer_keys),
            "accounts": [a.strip().upper() for a in request.account_ids],
            "cards": [c.strip().upper() for c in request.cards],
        },
    ).fetchall()
    return [key for (key,) in found]


def shared_contacts(conn: duckdb.DuckDBPyConnection, request: Request) -> dict[str, list[str]]:
    """Each email or phone of the request that more than one customer gives, with their keys
    (families and colleagues share them): as the command line's option and value."""
    shared = {}
    for flag, field, values in (
        ("--email", "emails", request.emails),
        ("--phone", "phones", request.phones),
    ):
        for value in values:
            keys = customers_of(
                conn, Request(**{field: (value,)}, phone_regions=request.phone_regions)
            )
            if len(keys) > 1:
                shared[f"{flag} {value}"] = keys
    return shared


def _raw_id(id_column: str, value: str | None = None) -> str:
    """A delivered id as staging keys it (trimmed, upper-cased; an account id's whole number
    as that number), so raw rows match the crosswalk's source ids."""
    keyed = f"upper(nullif(trim({value or quote_ident(id_column)}), ''))"
    return id_text(keyed) if id_column == "account_id" else keyed


def _set_null(columns: frozenset[str]) -> str:
    return ", ".join(f"{quote_ident(c)} = NULL" for c in sorted(columns))


def blank_raw(conn: duckdb.DuckDBPyConnection, source: str) -> int:
    """Blank the personal columns of raw.<source>'s rows of erased records; a load of raw calls
    it before it commits. Returns how many rows it blanked."""
    if source not in ERASABLE or not table_exists(conn, ERASED_RECORDS):
        return 0
    id_column = ERASABLE[source]
    (count,) = conn.execute(
        f"""
        UPDATE raw.{source}
        SET {_set_null(personal_columns(RAW_MODELS[source]))}
        WHERE {_raw_id(id_column)} IN (SELECT source_id FROM {ERASED_RECORDS} WHERE source = ?)
        """,
        [source],
    ).fetchall()[0]
    return count


def _their_values(conn: duckdb.DuckDBPyConnection, only: frozenset[str] | None = None) -> list[str]:
    """Every personal value the records of temp table `erasing` hold, as delivered (raw) and
    as staged (normalised), longest first."""
    parts = []
    for source, id_column in ERASABLE.items():
        for schema, models in (("raw", RAW_MODELS), ("staging", STAGING_MODELS)):
            columns = sorted(personal_columns(models[source]) - {"extra_columns"})
            columns = [c for c in columns if only is None or c in only]
            if not columns or not table_exists(conn, f"{schema}.{source}"):
                continue
            listed = ", ".join(f"CAST({quote_ident(c)} AS VARCHAR)" for c in columns)
            key = _raw_id(id_column) if schema == "raw" else id_column
            parts.append(
                f"SELECT unnest([{listed}]) AS value FROM {schema}.{source} "
                f"WHERE {key} IN (SELECT source_id FROM erasing WHERE source = '{source}')"
            )
    values = conn.execute(
        f"SELECT DISTINCT trim(value) AS v FROM ({' UNION ALL '.join(parts)}) "
        f"WHERE length(trim(value)) >= {SHORTEST_QUOTED} ORDER BY length(v) DESC, v"
    ).fetchall()
    return [v for (v,) in values]


def _their_phones(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """The digit forms a phone of the records of temp table `erasing` is typed in, from the
    number as staged (E.164): +12137971182 gives 2137971182, 12137971182, 02137971182,
    0012137971182 and 01112137971182 (national, international, with a trunk or an exit
    prefix)."""
    parts = [
        f"SELECT phone FROM staging.{source} "
        f"WHERE {id_column} IN (SELECT source_id FROM erasing WHERE source = '{source}')"
        for source, id_column in ERASABLE.items()
        if "phone" in personal_columns(STAGING_MODELS[source])
        and table_exists(conn, f"staging.{source}")
    ]
    if not parts:
        return []
    forms = set()
    found = conn.execute(f"SELECT DISTINCT phone FROM ({' UNION ALL '.join(parts)})")
    for (phone,) in found.fetchall():
        try:
            number = phonenumbers.parse(phone)
        except (phonenumbers.NumberParseException, TypeError):
            continue  # no phone
        national = phonenumbers.national_significant_number(number)
        country = str(number.country_code)
        forms |= {national, "0" + national}
        forms |= {prefix + country + national for prefix in ("", "00", "011")}
    return sorted(f for f in forms if len(f) >= 7)


def _records_quoting(conn: duckdb.DuckDBPyConnection, emails: list[str], phones: list[str]) -> None:
    """Add to temp table `erasing` the delivered records of no customer (staging set them
    aside: a rating out of range, a date that is none) whose email is one of the erased ones
    in any case ('J.OLIVER@OUTLOOK.COM'), or whose phone's digits are a form of one of theirs
    ('+1 213 797 1182'); blank those of them without an id, which no later load can
    recognise. Only a whole email or phone says whose a record is: a name or a birth day is
    shared by many."""
    tests = {
        "email": ("emails", "list_contains([lower(e) FOR e IN $emails], lower(trim(email)))"),
        "phone": ("phones", "list_contains($phones, regexp_replace(phone, '\\D', '', 'g'))"),
    }
    values = {"emails": emails, "phones": phones}
    for source, id_column in ERASABLE.items():
        if not table_exists(conn, f"raw.{source}"):
            continue
        given = personal_columns(RAW_MODELS[source])
        used = [tests[column] for column in sorted(tests) if column in given]
        theirs = " OR ".join(test for _, test in used)
        params = {name: values[name] for name, _ in used}
        record = _raw_id(id_column)
        conn.execute(
            f"""
            INSERT INTO erasing
            SELECT DISTINCT '{source}', {record}
            FROM raw.{source}
            WHERE {record} NOT IN (
                SELECT source_id FROM {CROSSWALK} WHERE source = '{source}'
                UNION ALL
                SELECT source_id FROM erasing WHERE source = '{source}'
            )
              AND ({theirs})
            """,
            params,
        )
        conn.execute(
            f"UPDATE raw.{source} SET {_set_null(given)} WHERE {record} IS NULL AND ({theirs})",
            params,
        )


def erase(
    conn: duckdb.DuckDBPyConnection, customer_keys: list[str], reason: str, now: datetime
) -> Erasure:
    """Erase the customers' personal data from every table (see the module), in the caller's
    transaction, and record the request."""
    ensure_tables(conn)
    request_id = uuid.uuid4().hex
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE erasing AS
        SELECT DISTINCT source, source_id
        FROM {CROSSWALK}
        WHERE list_contains($keys, customer_key) AND list_contains($sources, source)
        """,
        {"keys": customer_keys, "sources": list(ERASABLE)},
    )
    values = _their_values(conn)
    phones = _their_phones(conn)
    quoted = Quoted.of(conn, _their_values(conn, QUOTED_COLUMNS), phones)
    _records_quoting(conn, [v for v in values if "@" in v], phones)
    records = conn.execute("SELECT count(*) FROM erasing").fetchall()[0][0]
    files = _landing_files(conn, quoted)
    # A test or staff account is known by its email's domain, which goes: its rule is kept.
    conn.execute(
        f"""
        INSERT INTO {ERASED_RECORDS}
        SELECT e.source, e.source_id, x.rule, ?, ?
        FROM erasing AS e
        LEFT JOIN (
            SELECT c.source, c.source_id, min(r.rule) AS rule
            FROM {CROSSWALK} AS c
            JOIN core.excluded_rows AS r ON r.entity = 'customers' AND r.id = c.customer_key
            GROUP BY ALL
        ) AS x USING (source, source_id)
        """,
        [request_id, now],
    )
    if table_exists(conn, GROUPS):
        # The digest hashes the record's values: it goes, and the next run resolves it again.
        conn.execute(
            f"UPDATE {GROUPS} AS g SET digest = NULL FROM erasing AS e "
            "WHERE g.source = e.source AND g.source_id = e.source_id"
        )
    for source, id_column in ERASABLE.items():
        blank_raw(conn, source)
        conn.execute(
            f"""
            UPDATE staging.{source}
            SET {_set_null(personal_columns(STAGING_MODELS[source]))}
            WHERE {id_column} IN (SELECT source_id FROM erasing WHERE source = ?)
            """,
            [source],
        )
        patch = _patch(source)
        for log in (REJECTS_TABLE, MERGED_TABLE):
            conn.execute(
                f"""
                UPDATE {log}
                SET record = json_merge_patch(record, ?)
                WHERE source = ?
                  AND {_raw_id(id_column, f"json_extract_string(record, '$.{id_column}')")}
                      IN (SELECT source_id FROM erasing WHERE source = ?)
                """,
                [patch, source, source],
            )
    if quoted:
        # Rows set aside without an id to go by (a line cut off, an account without its id)
        # lose what quotes one of the values.
        conn.execute(
            f"UPDATE {RAW_REJECTS} SET raw_text = NULL "
            f"WHERE raw_text IS NOT NULL AND {QUOTING.format('raw_text')}",
            quoted.params(),
        )
        for source in ERASABLE:
            for log in (REJECTS_TABLE, MERGED_TABLE):
                conn.execute(
                    f"UPDATE {log} SET record = json_merge_patch(record, $patch) "
                    f"WHERE source = $source AND {QUOTING.format('record')}",
                    quoted.params() | {"patch": _patch(source), "source": source},
                )
    if values:
        # The cache holds phones by their digits too ('4155550100' for '(415) 555-0100').
        digits = sorted({d for v in values if len(d := re.sub(r"\D", "", v)) >= 7})
        conn.execute(
            f"DELETE FROM {CACHE_TABLE} WHERE list_contains($values, raw) "
            "OR list_contains($values, value)",
            {"values": values + digits + [f"+{d}" for d in digits]},
        )
    for table, whose in CORE_ROWS.items():
        conn.execute(
            f"UPDATE core.{table} SET {_set_null(personal_columns(CORE_MODELS[table]))} "
            f"WHERE list_contains($keys, {whose})",
            {"keys": customer_keys},
        )
    conn.execute(
        f"INSERT INTO {ERASURES} VALUES (?, ?, ?, ?, ?)",
        [request_id, now, reason, len(customer_keys), records],
    )
    conn.execute("DROP TABLE erasing")
    return Erasure(request_id, customer_keys, records, files)


def _patch(source: str) -> str:
    """A set-aside row keeps its delivered values as JSON: a merge patch that removes those of
    the personal columns (null removes a member)."""
    return (
        "{" + ", ".join(f'"{c}": null' for c in sorted(personal_columns(RAW_MODELS[source]))) + "}"
    )


def _landing_files(conn: duckdb.DuckDBPyConnection, quoted: Quoted) -> list[str]:
    """The delivered files (landing zone paths, or shop tables) the erased records came from,
    and those with a line set aside in quarantine that quotes one of their values (a file
    whose header did not match: loaded again, it would bring the line back)."""
    parts = [
        f"SELECT source_file FROM raw.{source} WHERE {_raw_id(id_column)} IN "
        f"(SELECT source_id FROM erasing WHERE source = '{source}')"
        for source, id_column in ERASABLE.items()
        if table_exists(conn, f"raw.{source}")
    ]
    quoting = bool(quoted) and table_exists(conn, RAW_REJECTS)
    if quoting:
        parts.append(
            f"SELECT source_file FROM {RAW_REJECTS} "
            f"WHERE raw_text IS NOT NULL AND {QUOTING.format('raw_text')}"
        )
    if not parts:
        return []
    found = conn.execute(
        f"SELECT DISTINCT source_file FROM ({' UNION '.join(parts)}) ORDER BY 1",
        quoted.params() if quoting else {},
    )
    return [f for (f,) in found.fetchall()]


def rewrite_file(path: str, memory_limit: str, storage_version: str) -> None:
    """Rewrite the DuckDB file at `path` with its live data only, in its place, in the storage
    format `storage_version`: an update leaves the old values in the file's free blocks until
    they are reused."""
    target = Path(path)
    fresh = target.with_name(target.name + ".rewrite")
    fresh.unlink(missing_ok=True)
    config = {"memory_limit": memory_limit, "storage_compatibility_version": storage_version}
    with as_private_as(target), duckdb.connect(str(target), config=config) as conn:
        conn.execute("CHECKPOINT")
        (name,) = conn.execute("SELECT current_database()").fetchall()[0]
        conn.execute(f"ATTACH {quote_literal(str(fresh))} AS fresh")
        conn.execute(f"COPY FROM DATABASE {quote_ident(name)} TO fresh")
        conn.execute("DETACH fresh")
        # Swapped in while this connection still holds the file, so no run opens it between.
        replace_file(fresh, target)
