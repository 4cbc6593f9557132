"""Staging rules: how each raw table becomes typed, normalised rows, and what sends a row away.

One `Source` per raw table: the typed columns (SQL over the raw row `r`), the values that go
through a Python normaliser first (emails, phones, names), the rules that quarantine a row,
and the business key duplicates are merged on. Pure data and SQL text, no Dagster.

Rules, one per defect class (first match wins, in this order):
- missing_required: a value the row means nothing without is empty;
- invalid_value: a value is there but does not parse as its type (a date, a number);
- then the out-of-range rules, each named for what is impossible: non_positive_quantity,
  negative_<column> (a price, a cost or a discount: 0 is a free gift or service),
  discount_exceeds_price,
  implausible_date (a year before 1900 or after 2199), future_timestamp (after the day it
  was delivered), timestamps_out_of_order (an inquiry
  answered or closed before it was opened), rating_off_scale, unknown_sku, unknown_store
  (an optional attribute of a person that is invalid, a birth date giving an age outside
  0-120 among them, is kept as NULL and counted instead);
then duplicates: a record whose business key is already staged from another day is merged
into it (redelivered); within a day, rows sharing the key keep one (the latest delivered) and
the others go to quarantine.merged_duplicates as exact_duplicate (same values) or superseded
(older values).
Missing optional values stay NULL; where a later score needs a value the default is documented
on the column (discount 0, customer_type individual).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from crm_pipeline.landing import NEED_DIMENSIONS
from crm_pipeline.raw.tables import id_text, quote_ident
from crm_pipeline.staging import normalise, phones

MISSING_REQUIRED = "missing_required"
INVALID_VALUE = "invalid_value"
EXACT_DUPLICATE = "exact_duplicate"
SUPERSEDED = "superseded"
REDELIVERED = "redelivered"
REDELIVERED_CHANGED = "redelivered_changed"
# Merges that kept one version of a record over another with other values.
CONFLICTING_MERGES = (SUPERSEDED, REDELIVERED_CHANGED)

# Oldest plausible birth date and the age a customer must have reached by their delivery day.
MAX_AGE_YEARS = 120
# The dates a business keeps; one outside is a mistyped year (see build._rule_sql).
IMPLAUSIBLE_DATE = "implausible_date"
EARLIEST, LATEST = "TIMESTAMP '1900-01-01'", "TIMESTAMP '2199-12-31 23:59:59'"


def text(column: str) -> str:
    """A delivered value trimmed, NULL when empty."""
    return f"nullif(trim(r.{quote_ident(column)}), '')"


@dataclass(frozen=True)
class Typed:
    """A staging column: its SQL type and how it is made from the raw row."""

    name: str
    sql_type: str
    expr: str
    required: bool = False
    # The raw value it parses, when a non-empty value that fails to parse is an error.
    parses: str | None = None
    # The raw column of a value that is kept as NULL when it is not valid (an email without a
    # domain, a code off its list): such values are counted, not quarantined.
    nulls_invalid: str | None = None


@dataclass(frozen=True)
class Check:
    """An out-of-range rule on typed values: when `when` holds, the row is quarantined."""

    rule: str
    when: str
    reason: str  # SQL giving the reason shown to the analyst
    # For a value that must be in a reference table: (column, table, key).
    reference: tuple[str, str, str] | None = None


@dataclass(frozen=True)
class Source:
    """How one raw table is staged."""

    name: str
    columns: tuple[Typed, ...]
    key: tuple[str, ...]
    checks: tuple[Check, ...] = ()
    # Values made in Python from a delivered column, over its distinct values:
    # lookup name -> (raw column, normaliser); a column reads it as n_<lookup>.value.
    normalised: dict[str, tuple[str, Callable[[str | None], str | None]]] = field(
        default_factory=dict
    )
    daily: bool = True
    # Staging tables this source's rules look values up in (unknown SKU, unknown store).
    lookups: tuple[str, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


# Dates and times as exports write them: ISO 8601, year first (- or / between its parts, a
# space or a T between day and time, seconds and their fractions optional), a 12-hour time
# with AM or PM, and a UTC offset (Z, +02:00, +0200, after a space or not), which converts
# the time to the business's time zone (the warehouse's time_zone: a connection's TimeZone).
# Any other form is not a valid value: day and month order in 1/3/25 is a guess, and
# DuckDB's own cast reads it as the year 1 and drops an offset or a PM.
_DAY_TEXT = r"\s*\d{4}[-/]\d{1,2}[-/]\d{1,2}"
_TIME_TEXT = r"[ T]\d{1,2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
_OFFSET = r"\s*([Zz]|[+-]\d{2}(:?\d{2})?)\s*"
# A time given with a UTC offset (converted to the business's zone).
_WITH_OFFSET = r"\d:\d{2}(:\d{2}(\.\d+)?)?" + _OFFSET + "$"
# The widest UTC offset: a time converted from an export's offset may fall this long past the
# end of the day the export dated it by.
_OFFSET_ALLOWANCE = "INTERVAL 14 HOUR"
_TWELVE_HOUR = r"[ T](0?[1-9]|1[0-2]):\d{2}(:\d{2})?\s*[AaPp][Mm]\s*"
_TWELVE_HOUR_FORMATS = "['%Y-%m-%d %I:%M:%S %p', '%Y-%m-%d %I:%M %p']"
TIME_FORMATS = "YYYY-MM-DD hh:mm[:ss], with a T or a space, optionally AM/PM or a UTC offset"


def parsed_sql(value: str, sql_type: str) -> str:
    """SQL for a delivered text value as `sql_type`: NULL when it does not parse (for DATE and
    TIMESTAMP, when it is in none of the forms above)."""
    if sql_type == "DATE":
        # A time after the day (an export's midnight) is dropped, as DuckDB's cast does.
        return (
            f"CASE WHEN regexp_full_match({value}, '{_DAY_TEXT}({_TIME_TEXT})?\\s*') "
            f"THEN TRY_CAST(replace(trim({value}), '/', '-') AS DATE) END"
        )
    if sql_type != "TIMESTAMP":
        return f"TRY_CAST({value} AS {sql_type})"
    # One spelling for DuckDB's cast and strptime: dashes, upper case, the offset or AM/PM
    # right after the time.
    tidy = (
        f"regexp_replace(replace(upper(trim({value})), '/', '-'), "
        f"'\\s+([Z+-][0-9:]*|[AP]M)$', '\\1')"
    )
    twelve = f"replace(regexp_replace({tidy}, '([AP]M)$', ' \\1'), 'T', ' ')"
    return f"""CASE
        WHEN regexp_full_match({value}, '{_DAY_TEXT}({_TIME_TEXT})?\\s*')
            THEN TRY_CAST({tidy} AS TIMESTAMP)
        WHEN regexp_full_match({value}, '{_DAY_TEXT}{_TIME_TEXT}{_OFFSET}')
            THEN CAST(TRY_CAST({tidy} AS TIMESTAMPTZ) AS TIMESTAMP)
        WHEN regexp_full_match({value}, '{_DAY_TEXT}{_TWELVE_HOUR}')
            THEN try_strptime({twelve}, {_TWELVE_HOUR_FORMATS})
    END"""


# A number as exports write one: a sign, digits and a decimal point, nothing else (blanks
# around it, a tab or a carriage return, are DuckDB's cast's to ignore).
PLAIN_NUMBER = r"\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)\s*"


def _attribute(column: str, sql_type: str) -> Typed:
    """An optional number (a person's income, a product's cost): a value that does not parse is
    kept as NULL and counted, as an invalid email is, so the record (and what links to it, a
    product's sales) stays; numbers only in plain notation (not 45.000,00), rounded to the
    type's scale (a cost of 59.994 is 59.99)."""
    value = text(column)
    parsed = (
        f"CASE WHEN regexp_full_match({value}, '{PLAIN_NUMBER}') "
        f"THEN TRY_CAST({value} AS {sql_type}) END"
    )
    return Typed(column, sql_type, parsed, nulls_invalid=column)


def _birth_date(column: str = "birth_date") -> Typed:
    """A person's birth date: one that is no day, or gives an impossible age (a placeholder
    such as 1900-01-01, a day after the delivery), is kept as NULL and counted, as any invalid
    optional attribute is: the record, and its orders' customer, stay."""
    day = parsed_sql(text(column), "DATE")
    bound = "coalesce(r.partition_date, CAST(r.loaded_at AS DATE))"
    return Typed(
        column,
        "DATE",
        f"CASE WHEN {day} BETWEEN {bound} - INTERVAL {MAX_AGE_YEARS} YEAR AND {bound} "
        f"THEN {day} END",
        nulls_invalid=column,
    )


def _cast(column: str, sql_type: str, required: bool = False, name: str | None = None) -> Typed:
    return Typed(
        name or column,
        sql_type,
        parsed_sql(text(column), sql_type),
        required=required,
        parses=text(column),
    )


def _text(column: str, required: bool = False, fold: str = "") -> Typed:
    expr = f"{fold}({text(column)})" if fold else text(column)
    return Typed(column, "VARCHAR", expr, required=required)


def _listed(column: str, table: str, key: str) -> Typed:
    """An optional reference: NULL, and counted, when the reference table does not list it (a
    customer's inquiry about a product the catalogue lacks is still their inquiry)."""
    value = f"upper({text(column)})"
    listed = f"CASE WHEN {value} IN (SELECT {key} FROM staging.{table}) THEN {value} END"
    return Typed(column, "VARCHAR", listed, nulls_invalid=column)


def _id(column: str, required: bool = False) -> Typed:
    """An id of the shop's: upper-case, a whole number as that number (see id_text)."""
    return Typed(column, "VARCHAR", id_text(f"upper({text(column)})"), required=required)


def _norm(lookup: str, raw: str | None = None) -> Typed:
    """A value made by a Python normaliser (joined in as n_<lookup>) from a raw column."""
    return Typed(lookup, "VARCHAR", f"n_{lookup}.value", nulls_invalid=raw or lookup)


def _choice(column: str, values: tuple[str, ...]) -> Typed:
    """A code from a fixed list; anything else is NULL (and counted by the quality report)."""
    listed = ", ".join(f"'{v}'" for v in values)
    return Typed(
        column,
        "VARCHAR",
        f"CASE WHEN lower({text(column)}) IN ({listed}) THEN lower({text(column)}) END",
        nulls_invalid=column,
    )


def _future(column: str) -> Check:
    """A timestamp after the end of the day it was delivered (or, for snapshots, after the
    load, on the business's clock); one converted from a UTC offset may be up to the widest
    offset later (an export in UTC dates a Berlin order of 00:30 by the day before)."""
    loaded = "CAST(timezone('UTC', t.raw_loaded_at) AS TIMESTAMP)"  # load times are UTC
    converted = f"regexp_matches(t.p_{column}, '{_WITH_OFFSET}')"
    bound = (
        f"coalesce(t.partition_date + INTERVAL 1 DAY, {loaded}) "
        f"+ CASE WHEN {converted} THEN {_OFFSET_ALLOWANCE} ELSE INTERVAL 0 HOUR END"
    )
    return Check(
        "future_timestamp",
        f"t.{column} >= {bound}",
        f"'{column} ' || t.{column} || ' is after its delivery'",
    )


# A line worth this much or more is a quantity or a price typed wrong (a barcode in the
# quantity field), not a sale; it would also overflow the warehouse's money columns
# (DECIMAL(14,2)) once an order adds up its lines.
LINE_AMOUNT_LIMIT = 1_000_000_000


def _line_amount_limit() -> Check:
    amount = "CAST(t.quantity AS DOUBLE) * CAST(t.unit_price AS DOUBLE)"
    return Check(
        "implausible_amount",
        f"{amount} >= {LINE_AMOUNT_LIMIT}",
        "'quantity ' || t.quantity || ' x unit_price ' || t.unit_price || ' is a billion or "
        "more: a quantity or price typed wrong?'",
    )


def _positive(column: str) -> Check:
    return Check(
        f"non_positive_{column}",
        f"t.{column} <= 0",
        f"'{column} ' || t.{column} || ' is not positive'",
    )


def _negative(column: str) -> Check:
    """An amount below 0; 0 itself is a price or a cost (a free gift on a receipt, a free
    service listed)."""
    return Check(
        f"negative_{column}", f"t.{column} < 0", f"'{column} ' || t.{column} || ' is negative'"
    )


def _scale(column: str, low: int, high: int) -> Check:
    return Check(
        "rating_off_scale",
        f"t.{column} NOT BETWEEN {low} AND {high}",
        f"'{column} ' || t.{column} || ' is off the {low}-{high} scale'",
    )


def _known(column: str, table: str, key: str) -> Check:
    return Check(
        f"unknown_{column.removesuffix('_id')}",
        f"t.{column} IS NOT NULL AND t.{column} NOT IN (SELECT {key} FROM staging.{table})",
        f"'{column} ' || t.{column} || ' is not in staging.{table}'",
        (column, table, key),
    )


CUSTOMER_TYPES = ("individual", "enterprise", "organization")
CONTACT_NORMALISERS = {
    "email": ("email", normalise.email),
    "phone": ("phone", phones.phone_e164),
}
PERSON_NORMALISERS = {
    **CONTACT_NORMALISERS,
    "full_name": ("full_name", normalise.full_name),
    "name_key": ("full_name", normalise.name_key),
    "address": ("address", normalise.address),
}

PRODUCTS = Source(
    "products",
    (
        _text("sku", required=True, fold="upper"),
        _text("name", required=True),
        _text("category", required=True),
        _text("subcategory"),
        _choice("kind", ("physical", "digital", "service")),
        _cast("unit_price", "DECIMAL(12,2)", required=True),
        _attribute("unit_cost", "DECIMAL(12,2)"),
    ),
    key=("sku",),
    checks=(
        # A list price of 0 is a free service or gift; set aside, it would take every line
        # selling it to quarantine as unknown_sku.
        _negative("unit_price"),
        _negative("unit_cost"),
    ),
    daily=False,
)

STORES = Source(
    "stores",
    (_text("store_id", required=True, fold="upper"), _text("city", required=True), _text("region")),
    key=("store_id",),
    daily=False,
)

LOYALTY_MEMBERS = Source(
    "loyalty_members",
    (
        _text("card_no", required=True, fold="upper"),
        _norm("full_name"),
        _norm("name_key", "full_name"),
        _norm("phone"),
        _norm("email"),
        _birth_date(),
        _norm("address"),
        _attribute("income", "DECIMAL(12,2)"),
        _cast("joined_at", "DATE", required=True),
    ),
    key=("card_no",),
    checks=(_future("joined_at"),),
    normalised=PERSON_NORMALISERS,
    daily=False,
)

ONLINE_ACCOUNTS = Source(
    "online_accounts",
    (
        _id("account_id", required=True),
        _norm("email"),
        _norm("phone"),
        _norm("full_name"),
        _norm("name_key", "full_name"),
        _choice("gender", ("m", "f")),
        _birth_date(),
        _norm("address"),
        _text("city"),
        _choice("customer_type", CUSTOMER_TYPES),
        _text("company_name"),
        _attribute("income", "DECIMAL(12,2)"),
        _cast("created_at", "TIMESTAMP", required=True),
    ),
    key=("account_id",),
    checks=(_future("created_at"),),
    normalised=PERSON_NORMALISERS,
    daily=False,
)

ONLINE_ORDERS = Source(
    "online_orders",
    (
        _id("order_id", required=True),
        _id("account_id", required=True),
        _cast("ordered_at", "TIMESTAMP", required=True),
        _text("status", fold="lower"),
        _text("payment_method", fold="lower"),
        _text("currency", fold="upper"),
        _cast("total_amount", "DECIMAL(12,2)"),
    ),
    key=("order_id",),
    checks=(_future("ordered_at"),),
)

ONLINE_ORDER_ITEMS = Source(
    "online_order_items",
    (
        _id("order_id", required=True),
        _cast("line_no", "INTEGER", required=True),
        _text("sku", required=True, fold="upper"),
        _cast("quantity", "INTEGER", required=True),
        _cast("unit_price", "DECIMAL(12,2)", required=True),
        Typed(
            "discount",
            "DECIMAL(12,2)",
            f"coalesce(TRY_CAST({text('discount')} AS DECIMAL(12,2)), 0)",
            parses=text("discount"),
        ),
    ),
    key=("order_id", "line_no"),
    checks=(
        _positive("quantity"),
        _negative("unit_price"),  # a free gift is a line priced 0
        _line_amount_limit(),
        _negative("discount"),
        Check(
            "discount_exceeds_price",
            # Said of a line that has a price: a return line's negative one says it already.
            "t.discount > t.quantity * t.unit_price AND t.quantity > 0",
            "'discount ' || t.discount || ' exceeds the line price ' || (t.quantity * t.unit_price)",
        ),
        _known("sku", "products", "sku"),
    ),
    lookups=("products",),
)

STORE_PURCHASES = Source(
    "store_purchases",
    (
        _text("receipt_id", required=True, fold="upper"),
        _text("store_id", required=True, fold="upper"),
        _cast("purchased_at", "TIMESTAMP", required=True),
        _text("loyalty_card", fold="upper"),
        _norm("phone"),
        _text("sku", required=True, fold="upper"),
        _cast("quantity", "INTEGER", required=True),
        _cast("unit_price", "DECIMAL(12,2)", required=True),
        _text("payment_method", fold="lower"),
    ),
    # A POS export has no line number; a receipt lists each product once (units are quantity).
    key=("receipt_id", "sku"),
    checks=(
        _future("purchased_at"),
        _positive("quantity"),
        _negative("unit_price"),  # a free gift is a line priced 0
        _line_amount_limit(),
        _known("sku", "products", "sku"),
        _known("store_id", "stores", "store_id"),
    ),
    normalised={"phone": ("phone", phones.phone_e164)},
    lookups=("products", "stores"),
)

INQUIRIES = Source(
    "inquiries",
    (
        _text("inquiry_id", required=True, fold="upper"),
        _text("channel", fold="lower"),
        _cast("opened_at", "TIMESTAMP", required=True),
        _cast("first_response_at", "TIMESTAMP"),
        _cast("closed_at", "TIMESTAMP"),
        _id("account_id"),
        _norm("email"),
        _norm("phone"),
        _choice(
            "topic", ("pre_sales", "complaint", "tech_support", "after_sales", "training", "other")
        ),
        _listed("sku", "products", "sku"),
        _text("text"),
    ),
    key=("inquiry_id",),
    checks=(
        _future("opened_at"),
        Check(
            "timestamps_out_of_order",
            "t.first_response_at < t.opened_at OR t.closed_at < t.opened_at",
            "'answered or closed before it was opened at ' || t.opened_at",
        ),
    ),
    normalised=CONTACT_NORMALISERS,
    lookups=("products",),
)

_NEEDS = tuple(
    _cast(f"need_{d}_{part}", "TINYINT")
    for d in NEED_DIMENSIONS
    for part in ("importance", "satisfaction")
)

FEEDBACK = Source(
    "feedback",
    (
        _text("response_id", required=True, fold="upper"),
        _cast("submitted_at", "TIMESTAMP", required=True),
        _id("account_id"),
        _norm("email"),
        _norm("phone"),
        _cast("satisfaction_rating", "TINYINT"),
        _cast("nps", "TINYINT"),
        *_NEEDS,
        _text("comment"),
    ),
    key=("response_id",),
    checks=(
        _future("submitted_at"),
        _scale("satisfaction_rating", 1, 5),
        _scale("nps", 0, 10),
        *(_scale(c.name, 1, 5) for c in _NEEDS),
    ),
    normalised=CONTACT_NORMALISERS,
)

# In the order they must be staged: lookups first.
SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        PRODUCTS,
        STORES,
        LOYALTY_MEMBERS,
        ONLINE_ACCOUNTS,
        ONLINE_ORDERS,
        ONLINE_ORDER_ITEMS,
        STORE_PURCHASES,
        INQUIRIES,
        FEEDBACK,
    )
}

# Every rule a staging reject can carry: the two generic ones, then each out-of-range check.
RULES = (
    MISSING_REQUIRED,
    INVALID_VALUE,
    IMPLAUSIBLE_DATE,
    *sorted({check.rule for source in SOURCES.values() for check in source.checks}),
)
