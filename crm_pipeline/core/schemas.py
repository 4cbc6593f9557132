"""Pandera contracts of the core model: one key per real customer, and the facts about them.

Category values are listed in the descriptions; thresholds are in `classify.CoreRules`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from crm_pipeline import checks  # noqa: F401  (distinct_values_match; string columns)
from crm_pipeline.core.classify import CHANNEL_PREFERENCES, LIFECYCLE_STAGES
from crm_pipeline.core.identity import RULE_CONFIDENCE, RULES, UNRESOLVED
from crm_pipeline.core.quality import STAGES
from crm_pipeline.landing import INQUIRY_TOPICS, NEED_DIMENSIONS
from crm_pipeline.staging.rules import CUSTOMER_TYPES
from crm_pipeline.staging.schemas import E164, EMAIL, PERSONAL, field

KEY = r"^C[0-9A-F]{16}$"


def key_number(column: str) -> str:
    """SQL for the customer key in `column` as the 64-bit number its 16 hex digits spell
    (NULL stays NULL): one to one with the key, since every core table holds its keys to KEY
    (a blocking check), and cheaper to group and join on than the text."""
    return f"CAST('0x' || substr({column}, 2) AS UBIGINT)"


def as_of_field(what: str = "Day computed as of") -> object:
    """The as-of day of a customer-level or market table."""
    return field(
        f"{what}, stored as its midnight: everything up to the end of that day counts, "
        "nothing after it.",
        nullable=False,
    )


def key_field(nullable: bool = False, what: str = "Customer key") -> object:
    return field(
        f"{what}: stable pseudonymous id ('C' + 16 hex digits) of one real customer.",
        nullable=nullable,
        distinct_values_match=KEY,
    )


class CoreModel(pa.DataFrameModel):
    class Config:
        strict = True
        coerce = True


class CustomerCrosswalk(CoreModel):
    """One row per identity-bearing source record (account, card, receipt, inquiry, response,
    order) and the customer it belongs to."""

    source: Series[str] = field("Staging table of the record.", nullable=False)
    source_id: Series[str] = field("The record's id in its source.", nullable=False)
    customer_key: Series[str] = key_field()
    match_rule: Series[str] = field(
        "Strongest rule linking the record to its customer: "
        + ", ".join(RULE_CONFIDENCE)
        + f", or {UNRESOLVED} (only a phone several customers share).",
        nullable=False,
        isin=RULES,
    )
    confidence: Series[float] = field(
        "How sure the link is, 0-1 (1 for ids we issue, lower for fuzzy rules).",
        nullable=False,
        ge=0,
        le=1,
    )
    seen_at: Series[pd.Timestamp] = field("Event time of the record.")
    key_since: Series[pd.Timestamp] = field(
        "When the customer key was first given.", nullable=False
    )


class CustomerKeyMerges(CoreModel):
    """One row per customer key retired because a new link showed two keys are one customer."""

    retired_key: Series[str] = key_field(what="Key no longer used")
    surviving_key: Series[str] = key_field(what="Key that replaces it")
    merged_at: Series[pd.Timestamp] = field("When the merge was found.", nullable=False)


class CustomerKeyScheme(CoreModel):
    """One row: how the warehouse's customer keys are made, and how to recognise the secret
    they are made with (which is kept outside the warehouse, in CRM_KEY_SECRET_FILE)."""

    scheme: Series[str] = field("How a new customer's key is made.", nullable=False)
    secret_check: Series[str] = field(
        "A keyed hash of a fixed text: tells a run it holds the right secret, and nothing "
        "of the secret.",
        nullable=False,
        str_matches=r"^[0-9a-f]{16}$",
    )
    keys_before_secret: Series[bool] = field(
        "True while keys given before keyed hashing (plain hashes of an id) are held: "
        "`crm-pipeline rekey` replaces them.",
        nullable=False,
    )
    files_pending: Series[bool] = field(
        "True while a rekey's old keys may remain in the warehouse file, the published copy "
        "or the report: `crm-pipeline rekey` finishes it.",
        nullable=False,
    )


class IdentityGroups(CoreModel):
    """One row per identity-bearing source record and the group it was last resolved in.

    A run resolves again only the groups that new, changed or gone records are in or touch.
    """

    source: Series[str] = field("Staging table of the record.", nullable=False)
    source_id: Series[str] = field("The record's id in its source.", nullable=False)
    digest: Series[np.uint64] = field(
        "Hash of the identity code and the record's values when it was resolved; NULL once "
        "erased (resolved again on the next run). " + PERSONAL
    )
    id_group: Series[np.uint64] = field(
        "The records it shares an email, phone, id, name and birth date or address with, "
        "directly or through others, named by a hash of the first one's source and id.",
        nullable=False,
    )


class Customers(CoreModel):
    """One row per customer key: the golden record.

    Survivorship: email and phone are the most recent valid ones across accounts, cards,
    inquiries and responses; name, birth date, type and income the most recent given; address
    the most complete (longest, then the most recent); first_seen_at the earliest record. Ties
    go to the greatest value, so a re-run picks the same.
    """

    customer_key: Series[str] = key_field()
    customer_type: Series[str] = field(
        "individual, enterprise or organization (individual when never recorded).",
        nullable=False,
        isin=list(CUSTOMER_TYPES),
    )
    full_name: Series[str] = field("Name. " + PERSONAL)
    email: Series[str] = field("Most recent valid email. " + PERSONAL, str_matches=EMAIL)
    phone: Series[str] = field("Most recent valid phone, E.164. " + PERSONAL, str_matches=E164)
    birth_date: Series[pd.Timestamp] = field("Birth date. " + PERSONAL)
    gender: Series[str] = field("m or f, when recorded. " + PERSONAL, isin=["m", "f"])
    address: Series[str] = field("Most complete postal address. " + PERSONAL)
    city: Series[str] = field(
        "City of the address, else of the store of their latest in-store purchase."
    )
    region: Series[str] = field("Sales region of the city, when a store is there.")
    company_name: Series[str] = field("Company or organisation, for non-individuals. " + PERSONAL)
    income: Series[float] = field(
        "Most recent declared yearly income; NULL when never given. " + PERSONAL
    )
    has_online_account: Series[bool] = field("Has a shop account.", nullable=False)
    has_loyalty_card: Series[bool] = field("Has a loyalty card.", nullable=False)
    source_records: Series[int] = field(
        "Source records resolved to this key.", nullable=False, ge=1
    )
    first_seen_at: Series[pd.Timestamp] = field("Earliest record of the customer.")
    key_since: Series[pd.Timestamp] = field("When the key was first given.", nullable=False)
    first_purchase_at: Series[pd.Timestamp] = field(
        "First purchase up to as_of (a line not refunded and not given free)."
    )
    last_purchase_at: Series[pd.Timestamp] = field("Last purchase up to as_of.")
    online_orders: Series[int] = field(
        "Online orders holding a purchase up to as_of.", nullable=False, ge=0
    )
    store_orders: Series[int] = field(
        "Store receipts holding a purchase up to as_of.", nullable=False, ge=0
    )
    lifecycle_stage: Series[str] = field(
        "new (first purchase within new_days), active (last within active_days), lapsing "
        "(within lapsing_days), lapsed (longer ago), prospect (never bought).",
        nullable=False,
        isin=list(LIFECYCLE_STAGES),
    )
    channel_preference: Series[str] = field(
        "online or store (under omnichannel_share of purchases in the other), omnichannel, or "
        "none (no purchases).",
        nullable=False,
        isin=list(CHANNEL_PREFERENCES),
    )
    as_of: Series[pd.Timestamp] = as_of_field("Day the categories are computed for")


class Products(CoreModel):
    """One row per product SKU, classified."""

    sku: Series[str] = field("Product SKU.", nullable=False, unique=True)
    name: Series[str] = field("Product name.", nullable=False)
    category: Series[str] = field(
        "Top-level category (the hierarchy's first level).", nullable=False
    )
    subcategory: Series[str] = field("Second level of the hierarchy.")
    kind: Series[str] = field(
        "physical, digital or service.", isin=["physical", "digital", "service"]
    )
    unit_price: Series[float] = field(
        "List price (0: a free service or gift).", nullable=False, ge=0
    )
    unit_cost: Series[float] = field("Cost per unit; NULL when unknown.", ge=0)
    margin_rate: Series[float] = field(
        "(price - cost) / price, %; NULL when the cost is unknown or the price 0 (a free item)."
    )
    price_band: Series[str] = field(
        "budget, mid or premium: tertiles of list price.",
        nullable=False,
        isin=["budget", "mid", "premium"],
    )


class Stores(CoreModel):
    """One row per store."""

    store_id: Series[str] = field("Store id.", nullable=False, unique=True)
    city: Series[str] = field("City.", nullable=False)
    region: Series[str] = field("Sales region.")


class OrderLines(CoreModel):
    """One row per order line, online and in store, after exclusions; sorted by customer and
    time (a daily run appends the orders it rewrites, sorted among themselves)."""

    customer_key: Series[str] = key_field(
        nullable=True, what="Customer key (NULL for anonymous store receipts)"
    )
    ordered_at: Series[pd.Timestamp] = field("Order or purchase time.", nullable=False)
    channel: Series[str] = field("online or store.", nullable=False, isin=["online", "store"])
    order_id: Series[str] = field("Order id (online) or receipt id (store).", nullable=False)
    line_no: Series[int] = field("Line within the order or receipt.", nullable=False, ge=1)
    store_id: Series[str] = field("Store, for store purchases.")
    order_status: Series[str] = field(
        "The shop's status, lower-case (store: completed); 'refunded' for any of "
        "core_rules.refund_statuses (a refunded or returned order)."
    )
    payment_method: Series[str] = field("Payment method.")
    order_size_band: Series[str] = field(
        "small, medium or large: tertiles of the order's value as placed (quantity x unit "
        "price - discount over its lines; a refunded order keeps the band of what it was).",
        nullable=False,
        isin=["small", "medium", "large"],
    )
    sku: Series[str] = field("Product SKU.", nullable=False)
    category: Series[str] = field("Product category.")
    subcategory: Series[str] = field("Product subcategory.")
    product_kind: Series[str] = field("physical, digital or service.")
    quantity: Series[int] = field("Units.", nullable=False, gt=0)
    unit_price: Series[float] = field(
        "Price per unit; 0 for a free gift or sample.", nullable=False, ge=0
    )
    discount: Series[float] = field("Discount on the line.", nullable=False, ge=0)
    gross_amount: Series[float] = field("quantity x unit_price.", nullable=False)
    refund_amount: Series[float] = field(
        "Refunded amount (whole line for refunded orders).", nullable=False
    )
    net_amount: Series[float] = field("gross - discount - refund.", nullable=False)
    margin: Series[float] = field(
        "net - quantity x unit_cost; 0 for a refunded line (the goods came back, so did the "
        "money); NULL when cost unknown."
    )
    source_file: Series[str] = field("File (or shop table) of the staged line.", nullable=False)
    source_line: Series[int] = field("Record number of the staged line.", nullable=False)
    loaded_at: Series[pd.Timestamp] = field(
        "When the line was written (UTC); a run rewrites only the orders it changes.",
        nullable=False,
    )


class Inquiries(CoreModel):
    """One row per helpdesk inquiry, with its customer; sorted by customer and time.

    The helpdesk delivers an inquiry on the day it opened, with the times of its first
    response and closing as its export holds them, which may be days later than that day, or
    than the day a mart is computed for: the marts read inquiries as of their day
    (core.model.inquiries_as_of), a response or closing after it not yet happened."""

    customer_key: Series[str] = key_field(nullable=True, what="Customer key (NULL when anonymous)")
    opened_at: Series[pd.Timestamp] = field("Opened.", nullable=False)
    inquiry_id: Series[str] = field("Ticket id.", nullable=False, unique=True)
    channel: Series[str] = field("Contact channel.")
    topic: Series[str] = field(", ".join(INQUIRY_TOPICS) + ".", isin=list(INQUIRY_TOPICS))
    sku: Series[str] = field("Product concerned.")
    category: Series[str] = field("Category of that product.")
    first_response_at: Series[pd.Timestamp] = field(
        "First response, as delivered (may be after the delivery day)."
    )
    closed_at: Series[pd.Timestamp] = field("Closed, as delivered (may be after the delivery day).")
    first_response_hours: Series[float] = field("Hours to first response.")
    resolution_hours: Series[float] = field("Hours to close.")


class Feedback(CoreModel):
    """One row per survey response, with its customer; sorted by customer and time."""

    customer_key: Series[str] = key_field(nullable=True, what="Customer key (NULL when anonymous)")
    submitted_at: Series[pd.Timestamp] = field("Submitted.", nullable=False)
    response_id: Series[str] = field("Response id.", nullable=False, unique=True)
    satisfaction_rating: Series[int] = field("Overall satisfaction 1-5.", ge=1, le=5)
    nps: Series[int] = field("Likelihood to recommend 0-10.", ge=0, le=10)
    nps_group: Series[str] = field(
        "promoter (9-10), passive (7-8), detractor (0-6).",
        isin=["promoter", "passive", "detractor"],
    )
    comment: Series[str] = field("Free-text comment. " + PERSONAL)


class FeedbackNeeds(CoreModel):
    """One row per survey response and need dimension answered."""

    customer_key: Series[str] = key_field(nullable=True, what="Customer key (NULL when anonymous)")
    submitted_at: Series[pd.Timestamp] = field("Submitted.", nullable=False)
    response_id: Series[str] = field("Response id.", nullable=False)
    dimension: Series[str] = field(
        "Need dimension: " + ", ".join(NEED_DIMENSIONS) + ".",
        nullable=False,
        isin=list(NEED_DIMENSIONS),
    )
    importance: Series[int] = field("Importance 1-5.", ge=1, le=5)
    satisfaction: Series[int] = field("Satisfaction 1-5.", ge=1, le=5)


class ExcludedRows(CoreModel):
    """One row per row left out of the core model by a configured exclusion."""

    entity: Series[str] = field("order_lines, inquiries, feedback or customers.", nullable=False)
    id: Series[str] = field(
        "channel:order:line, inquiry id, response id or customer key.", nullable=False
    )
    rule: Series[str] = field(
        "test_account, staff_account, order_status_<status> (e.g. order_status_cancelled), or "
        "order_not_staged (an order line whose order was quarantined or never delivered).",
        nullable=False,
    )


class QualityReport(CoreModel):
    """One row per source, partition, stage and rule: how many rows went where."""

    source: Series[str] = field("Source (raw table).", nullable=False)
    partition_date: Series[pd.Timestamp] = field(
        "Delivery day; NULL for snapshots, shop rows of no partition, and identity matches."
    )
    stage: Series[str] = field(
        "delivered (rows in the files or shop tables), raw_rejected (unreadable), raw (landed), "
        "quarantined (set aside by a staging rule), merged (duplicates), staged (rows out), "
        "nulled (staged values kept as NULL because invalid; rule = column), flagged (kept "
        "but suspect: total_mismatch = an order total that differs from its lines, "
        "unknown_account = an order whose account is not among the staged accounts, "
        "other_currency = an order in another currency than most orders, summed as delivered), "
        "identity_match (crosswalk records by match rule).",
        nullable=False,
        isin=list(STAGES),
    )
    rule: Series[str] = field(
        "Reject reason, staging rule, merge rule, nulled column or match rule; empty for counts.",
        nullable=False,
    )
    rows: Series[int] = field("Rows.", nullable=False, ge=0)


CORE_MODELS: dict[str, type[CoreModel]] = {
    "customer_crosswalk": CustomerCrosswalk,
    "customer_key_merges": CustomerKeyMerges,
    "customer_key_scheme": CustomerKeyScheme,
    "identity_groups": IdentityGroups,
    "customers": Customers,
    "products": Products,
    "stores": Stores,
    "order_lines": OrderLines,
    "inquiries": Inquiries,
    "feedback": Feedback,
    "feedback_needs": FeedbackNeeds,
    "excluded_rows": ExcludedRows,
    "quality_report": QualityReport,
}


def column_types(model: type[pa.DataFrameModel]) -> list[tuple[str, str]]:
    """Columns in table order with their contract types (core tables are built by CTAS)."""
    return [(name, str(column.dtype)) for name, column in model.to_schema().columns.items()]


# Contract dtypes (pandera's names) as the warehouse stores them; a SQL type stays as it is.
_SQL_TYPES = {
    "string": "VARCHAR",
    "float64": "DOUBLE",
    "int64": "BIGINT",
    "Int64": "BIGINT",
    "uint64": "UBIGINT",
    "UInt64": "UBIGINT",
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "datetime64[ns]": "TIMESTAMP",
}


def sql_type(dtype: str) -> str:
    """A contract's column type as the warehouse stores it (string[pyarrow] -> VARCHAR)."""
    return _SQL_TYPES.get("string" if dtype.startswith("string") else dtype, dtype)
