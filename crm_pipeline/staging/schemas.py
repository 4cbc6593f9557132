"""Pandera contracts of the staging layer: typed, normalised rows, 1:1 with raw, plus the
quarantine of rows set aside there.

Values here passed every rule in `rules.py`; nullable columns are optional in the source.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

import crm_pipeline.checks  # noqa: F401  (string columns checked once per column)
from crm_pipeline.landing import INQUIRY_TOPICS
from crm_pipeline.staging.rules import CUSTOMER_TYPES, RULES

PERSONAL = "Personal data."
E164 = r"^\+[1-9]\d{6,14}$"
# What \s matches in Python, each character written out: pandas hands a pattern without \s to
# Arrow (RE2, a column at once), one with it to Python's re (a value at a time, four times
# slower).
WHITESPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
EMAIL = f"^[^@{WHITESPACE}]+@[^@{WHITESPACE}]+\\.[a-z]{{2,}}$"


def field(description: str, nullable: bool = True, **checks) -> object:
    personal = description.endswith(PERSONAL)
    return pa.Field(
        nullable=nullable,
        description=description,
        metadata={"personal_data": personal},
        **checks,
    )


def email_field(who: str) -> object:
    return field(
        f"{who} email, lower-case, +tag and gmail dots removed; NULL when missing or malformed. "
        + PERSONAL,
        str_matches=EMAIL,
    )


def phone_field(who: str) -> object:
    return field(
        f"{who} phone in E.164 (+<country><number>); NULL when missing or not a valid number. "
        + PERSONAL,
        str_matches=E164,
    )


class StagingRecord(pa.DataFrameModel):
    """Lineage every staging row keeps: the raw row it came from."""

    source_file: Series[str] = pa.Field(description="File (or shop:<table>) of the raw row.")
    source_line: Series[int] = pa.Field(ge=1, description="Record number of the raw row.")
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Delivery day; NULL for snapshot sources."
    )
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When staging ran (UTC).")

    class Config:
        strict = True
        coerce = True


class StagingProducts(StagingRecord):
    """One row per product SKU of the product reference."""

    sku: Series[str] = field("Product SKU, upper-case.", nullable=False)
    name: Series[str] = field("Product name.", nullable=False)
    category: Series[str] = field("Top-level category.", nullable=False)
    subcategory: Series[str] = field("Subcategory within the category.")
    kind: Series[str] = field(
        "physical, digital or service; NULL when not one of them.",
        isin=["physical", "digital", "service"],
    )
    unit_price: Series[float] = field(
        "List price per unit, >= 0 (0: a free service or gift).", nullable=False, ge=0
    )
    unit_cost: Series[float] = field("Cost per unit, >= 0; NULL when unknown.", ge=0)


class StagingStores(StagingRecord):
    """One row per store of the store reference."""

    store_id: Series[str] = field("Store id, upper-case.", nullable=False)
    city: Series[str] = field("City of the store.", nullable=False)
    region: Series[str] = field("Sales region.")


class StagingPerson(StagingRecord):
    """What accounts and loyalty members both say about a person."""

    full_name: Series[str] = field(
        "Name, Unicode-normalised, 'Last, First' turned round, all-caps title-cased. " + PERSONAL
    )
    name_key: Series[str] = field(
        "Name for matching: ASCII (pinyin for Chinese), lower-case, tokens sorted, initials "
        "dropped. " + PERSONAL
    )
    phone: Series[str] = phone_field("Contact")
    email: Series[str] = email_field("Contact")
    birth_date: Series[pd.Timestamp] = field(
        "Birth date; an age outside 0-120 is quarantined. " + PERSONAL
    )
    address: Series[str] = field("Postal address, Unicode-normalised. " + PERSONAL)
    income: Series[float] = field("Declared yearly income; NULL when not given. " + PERSONAL)


class StagingLoyaltyMembers(StagingPerson):
    """One row per loyalty card of the member reference."""

    card_no: Series[str] = field("Loyalty card number, upper-case.", nullable=False)
    joined_at: Series[pd.Timestamp] = field("Day the member joined.", nullable=False)


class StagingOnlineAccounts(StagingPerson):
    """One row per shop account."""

    account_id: Series[str] = field("Shop account id, upper-case.", nullable=False)
    gender: Series[str] = field("m or f; NULL when not recorded. " + PERSONAL, isin=["m", "f"])
    city: Series[str] = field("City of the address.")
    customer_type: Series[str] = field(
        "individual, enterprise or organization; NULL when not recorded (core defaults it to "
        "individual).",
        isin=list(CUSTOMER_TYPES),
    )
    company_name: Series[str] = field(
        "Company or organisation name for non-individuals. " + PERSONAL
    )
    created_at: Series[pd.Timestamp] = field("When the account was opened.", nullable=False)


class StagingOnlineOrders(StagingRecord):
    """One row per shop order (re-exports merged)."""

    order_id: Series[str] = field("Shop order id, upper-case.", nullable=False)
    account_id: Series[str] = field("Account that placed it.", nullable=False)
    ordered_at: Series[pd.Timestamp] = field("Order time.", nullable=False)
    status: Series[str] = field("Order status, lower-case (completed, cancelled, refunded).")
    payment_method: Series[str] = field("Payment method, lower-case.")
    currency: Series[str] = field("Currency code, upper-case.")
    total_amount: Series[float] = field("Order total as the shop recorded it.")


class StagingOnlineOrderItems(StagingRecord):
    """One row per shop order line (order_id, line_no)."""

    order_id: Series[str] = field("Order the line belongs to.", nullable=False)
    line_no: Series[int] = field("Line number within the order.", nullable=False)
    sku: Series[str] = field("Product SKU, known in staging.products.", nullable=False)
    quantity: Series[int] = field("Units ordered, > 0.", nullable=False, gt=0)
    unit_price: Series[float] = field(
        "Price per unit before discount; 0 for a free gift.", nullable=False, ge=0
    )
    discount: Series[float] = field(
        "Discount on the line in currency, >= 0 (0 when not given).", nullable=False, ge=0
    )


class StagingStorePurchases(StagingRecord):
    """One row per POS receipt line (exact re-deliveries merged)."""

    receipt_id: Series[str] = field("POS receipt id, upper-case.", nullable=False)
    store_id: Series[str] = field("Store, known in staging.stores.", nullable=False)
    purchased_at: Series[pd.Timestamp] = field("Purchase time.", nullable=False)
    loyalty_card: Series[str] = field(
        "Loyalty card scanned, upper-case (a pseudonymous id, as the member's card_no)."
    )
    phone: Series[str] = phone_field("Phone given at the till,")
    sku: Series[str] = field("Product SKU, known in staging.products.", nullable=False)
    quantity: Series[int] = field("Units bought, > 0.", nullable=False, gt=0)
    unit_price: Series[float] = field(
        "Price per unit charged; 0 for a free gift.", nullable=False, ge=0
    )
    payment_method: Series[str] = field("Payment method, lower-case.")


class StagingInquiries(StagingRecord):
    """One row per helpdesk inquiry."""

    inquiry_id: Series[str] = field("Helpdesk ticket id, upper-case.", nullable=False)
    channel: Series[str] = field("Contact channel, lower-case.")
    opened_at: Series[pd.Timestamp] = field("When it was opened.", nullable=False)
    first_response_at: Series[pd.Timestamp] = field("First response; NULL when none yet.")
    closed_at: Series[pd.Timestamp] = field("When it was closed; NULL while open.")
    account_id: Series[str] = field("Shop account id, if given.")
    email: Series[str] = email_field("Contact")
    phone: Series[str] = phone_field("Contact")
    topic: Series[str] = field(
        "One of " + ", ".join(INQUIRY_TOPICS) + "; NULL when not one of them.",
        isin=list(INQUIRY_TOPICS),
    )
    sku: Series[str] = field("Product concerned, known in staging.products, if any.")
    text: Series[str] = field("Free text of the inquiry. " + PERSONAL)


def _need(dimension: str, part: str) -> object:
    what = dimension.replace("_", " ")
    return field(f"{part.capitalize()} of {what}, 1-5; NULL when not answered.", ge=1, le=5)


class StagingFeedback(StagingRecord):
    """One row per survey response."""

    response_id: Series[str] = field("Survey response id, upper-case.", nullable=False)
    submitted_at: Series[pd.Timestamp] = field("Submission time.", nullable=False)
    account_id: Series[str] = field("Shop account id, if given.")
    email: Series[str] = email_field("Respondent")
    phone: Series[str] = phone_field("Respondent")
    satisfaction_rating: Series[int] = field("Overall satisfaction, 1-5.", ge=1, le=5)
    nps: Series[int] = field("Likelihood to recommend, 0-10.", ge=0, le=10)
    need_product_quality_importance: Series[int] = _need("product_quality", "importance")
    need_product_quality_satisfaction: Series[int] = _need("product_quality", "satisfaction")
    need_price_importance: Series[int] = _need("price", "importance")
    need_price_satisfaction: Series[int] = _need("price", "satisfaction")
    need_delivery_importance: Series[int] = _need("delivery", "importance")
    need_delivery_satisfaction: Series[int] = _need("delivery", "satisfaction")
    need_customer_service_importance: Series[int] = _need("customer_service", "importance")
    need_customer_service_satisfaction: Series[int] = _need("customer_service", "satisfaction")
    need_ease_of_use_importance: Series[int] = _need("ease_of_use", "importance")
    need_ease_of_use_satisfaction: Series[int] = _need("ease_of_use", "satisfaction")
    comment: Series[str] = field("Free-text comment. " + PERSONAL)


class StagingRejects(pa.DataFrameModel):
    """One row per raw row set aside by a staging rule, with its delivered values."""

    source: Series[str] = pa.Field(description="Raw table the row came from.")
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Delivery day; NULL for snapshots."
    )
    source_file: Series[str] = pa.Field(description="File (or shop:<table>) of the raw row.")
    source_line: Series[int] = pa.Field(ge=1, description="Record number of the raw row.")
    rule: Series[str] = pa.Field(
        isin=list(RULES),
        description=(
            "missing_required (a required value is empty), invalid_value (a value does not "
            "parse), or the out-of-range rule of an impossible value: negative_unit_price (a "
            "line's or a product's list price: 0 is a free gift or service), "
            "non_positive_quantity, implausible_amount (a line of a billion or more), "
            "negative_discount, discount_exceeds_price, "
            "negative_unit_cost, future_timestamp (after its delivery day), "
            "timestamps_out_of_order, implausible_date (before 1900 or after 2199), "
            "rating_off_scale, "
            "unknown_sku, unknown_store."
        ),
    )
    reason: Series[str] = pa.Field(description="Which values broke the rule, and how.")
    record: Series[str] = pa.Field(
        description="The delivered values, as JSON. " + PERSONAL,
        metadata={"personal_data": True},
    )
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When staging ran.")

    class Config:
        strict = True
        coerce = True


class MergedDuplicates(pa.DataFrameModel):
    """One row per raw row merged into another with the same business key."""

    source: Series[str] = pa.Field(description="Raw table the row came from.")
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Delivery day; NULL for snapshots."
    )
    source_file: Series[str] = pa.Field(description="File of the merged row.")
    source_line: Series[int] = pa.Field(ge=1, description="Record number of the merged row.")
    kept_source_file: Series[str] = pa.Field(description="File of the row kept in staging.")
    kept_source_line: Series[int] = pa.Field(ge=1, description="Record number of the kept row.")
    rule: Series[str] = pa.Field(
        isin=["exact_duplicate", "superseded", "redelivered", "redelivered_changed"],
        description=(
            "exact_duplicate: the same values delivered again (a repeated row, a re-exported "
            "order); superseded: an older version of a record delivered again with changes; "
            "redelivered: a record already staged from an earlier delivery day; "
            "redelivered_changed: the same, with other values (the earlier day's stay)."
        ),
    )
    record: Series[str] = pa.Field(
        description="The merged row's delivered values, as JSON. " + PERSONAL,
        metadata={"personal_data": True},
    )
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When staging ran.")

    class Config:
        strict = True
        coerce = True


class NulledValues(pa.DataFrameModel):
    """One row per source, partition and column: staged rows whose delivered value was not
    valid and is kept as NULL (an email without a domain, a phone no country issues, a code
    off its list). The values themselves stay in raw."""

    source: Series[str] = pa.Field(description="Raw table the rows came from.")
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Delivery day; NULL for snapshots."
    )
    column_name: Series[str] = pa.Field(description="Staging column set to NULL.")
    rows: Series[int] = pa.Field(ge=1, description="Rows whose value was set to NULL.")
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When staging ran.")

    class Config:
        strict = True
        coerce = True


class NormalisedValues(pa.DataFrameModel):
    """One row per distinct delivered value a Python normaliser has seen, and per spelling it
    read in their place (a phone number with its punctuation dropped): a cache, where each value
    is normalised once, then looked up."""

    normaliser: Series[str] = pa.Field(
        description="Normaliser and a digest of its code (email, phone_e164, full_name, ...)."
    )
    raw: Series[str] = pa.Field(
        description="The value as delivered, trimmed. " + PERSONAL, metadata={"personal_data": True}
    )
    value: Series[str] = pa.Field(
        nullable=True,
        description="The normalised value; NULL when the delivered one is not valid. " + PERSONAL,
        metadata={"personal_data": True},
    )

    class Config:
        strict = True
        coerce = True


class StagedWith(pa.DataFrameModel):
    """One row per source and staged day (one row with no day for a snapshot): the business
    settings it was read with."""

    source: Series[str] = pa.Field(description="Staging table.")
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Delivery day; NULL for snapshots."
    )
    time_zone: Series[str] = pa.Field(
        description="CRM_TIME_ZONE: the time zone times with a UTC offset were converted to."
    )
    phone_regions: Series[str] = pa.Field(
        description="CRM_PHONE_REGIONS: the countries a phone without its country code was "
        "read in, such as US,CN,DE."
    )
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When staging ran.")
    code: Series[str] = pa.Field(
        nullable=True,
        description="Digest of the code that read and staged the day (the raw and staging "
        "modules and the phone library's version); NULL: a version before it was recorded.",
    )

    class Config:
        strict = True
        coerce = True


STAGING_MODELS: dict[str, type[StagingRecord]] = {
    "products": StagingProducts,
    "stores": StagingStores,
    "loyalty_members": StagingLoyaltyMembers,
    "online_accounts": StagingOnlineAccounts,
    "online_orders": StagingOnlineOrders,
    "online_order_items": StagingOnlineOrderItems,
    "store_purchases": StagingStorePurchases,
    "inquiries": StagingInquiries,
    "feedback": StagingFeedback,
}
