"""Pandera contracts of the raw layer: every delivered value as text, plus its lineage.

Raw holds values as delivered, so contract columns are nullable text; the lineage columns are
what must always hold. Column descriptions here become the column schema operators see.
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

import crm_pipeline.checks  # noqa: F401  (string columns checked once per column)

PERSONAL = "Personal data."


def _text(description: str) -> Series[str]:
    """A delivered value kept as text; personal-data columns say so and carry the tag."""
    personal = description.endswith(PERSONAL)
    return pa.Field(nullable=True, description=description, metadata={"personal_data": personal})


class RawRecord(pa.DataFrameModel):
    """Lineage every raw row carries."""

    extra_columns: Series[str] = pa.Field(
        nullable=True,
        metadata={"personal_data": True},
        description=(
            "Delivered columns outside the landing contract, as a JSON object (NULL when "
            f"none); may hold personal data (a renamed email column). {PERSONAL}"
        ),
    )
    source_file: Series[str] = pa.Field(
        description="File the row came from, relative to the landing zone, or shop:<table>.",
    )
    source_line: Series[int] = pa.Field(
        ge=1,
        description="Record number in the file (header = 1), or the row id in the shop table.",
    )
    source_lines: Series[int] = pa.Field(
        ge=1,
        description="Non-empty physical lines the record spans (1 unless a quoted value breaks lines).",
    )
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Delivery day (daily sources); NULL for snapshot sources."
    )
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When this row was loaded (UTC).")

    class Config:
        strict = True
        coerce = True


class RawOnlineAccounts(RawRecord):
    """One row per account row in the shop's accounts table, as delivered."""

    account_id: Series[str] = _text("Shop account id.")
    email: Series[str] = _text(f"Email as typed by the customer. {PERSONAL}")
    phone: Series[str] = _text(f"Phone as typed, any format. {PERSONAL}")
    full_name: Series[str] = _text(f"Name as typed. {PERSONAL}")
    gender: Series[str] = _text(f"Gender as recorded. {PERSONAL}")
    birth_date: Series[str] = _text(f"Birth date as recorded. {PERSONAL}")
    address: Series[str] = _text(f"Postal address. {PERSONAL}")
    city: Series[str] = _text("City of the address.")
    customer_type: Series[str] = _text("individual, enterprise or organization, as recorded.")
    company_name: Series[str] = _text(
        f"Company or organisation name for non-individuals (a sole trader's may be a name). {PERSONAL}"
    )
    income: Series[str] = _text(f"Declared yearly income, as delivered. {PERSONAL}")
    created_at: Series[str] = _text("When the account was opened.")


class RawOnlineOrders(RawRecord):
    """One row per order row in the shop's orders table, as delivered (re-exports included)."""

    order_id: Series[str] = _text("Shop order id.")
    account_id: Series[str] = _text("Account that placed the order.")
    ordered_at: Series[str] = _text("Order time; its day is the partition.")
    status: Series[str] = _text("Order status (completed, cancelled, refunded, ...).")
    payment_method: Series[str] = _text("Payment method.")
    currency: Series[str] = _text("Currency code.")
    total_amount: Series[str] = _text("Order total as recorded by the shop.")


class RawOnlineOrderItems(RawRecord):
    """One row per order line in the shop's order_items table, partitioned by its order's day."""

    order_id: Series[str] = _text("Order the line belongs to.")
    line_no: Series[str] = _text("Line number within the order.")
    sku: Series[str] = _text("Product SKU.")
    quantity: Series[str] = _text("Units ordered.")
    unit_price: Series[str] = _text("Price per unit before discount.")
    discount: Series[str] = _text("Discount on the line, in currency.")


class RawStorePurchases(RawRecord):
    """One row per delivered POS receipt line, as delivered."""

    receipt_id: Series[str] = _text("POS receipt id.")
    store_id: Series[str] = _text("Store of the purchase.")
    purchased_at: Series[str] = _text("Purchase time.")
    loyalty_card: Series[str] = _text(
        "Loyalty card number scanned, if any (a pseudonymous id, as the member's card_no)."
    )
    phone: Series[str] = _text(f"Phone given at the till, if any. {PERSONAL}")
    sku: Series[str] = _text("Product SKU.")
    quantity: Series[str] = _text("Units bought.")
    unit_price: Series[str] = _text("Price per unit charged.")
    payment_method: Series[str] = _text("Payment method.")


class RawInquiries(RawRecord):
    """One row per delivered helpdesk inquiry (one JSON line), as delivered."""

    inquiry_id: Series[str] = _text("Helpdesk ticket id.")
    channel: Series[str] = _text("Contact channel (email, phone, chat, web_form).")
    opened_at: Series[str] = _text("When the inquiry was opened.")
    first_response_at: Series[str] = _text("First response time.")
    closed_at: Series[str] = _text("When it was closed.")
    account_id: Series[str] = _text("Shop account id, if known.")
    email: Series[str] = _text(f"Contact email. {PERSONAL}")
    phone: Series[str] = _text(f"Contact phone. {PERSONAL}")
    topic: Series[str] = _text("pre_sales, complaint, tech_support, after_sales, training, other.")
    sku: Series[str] = _text("Product concerned, if any.")
    text: Series[str] = _text(f"Free text of the inquiry; may hold personal data. {PERSONAL}")


class RawFeedback(RawRecord):
    """One row per delivered survey response, as delivered."""

    response_id: Series[str] = _text("Survey response id.")
    submitted_at: Series[str] = _text("Submission time.")
    account_id: Series[str] = _text("Shop account id, if known.")
    email: Series[str] = _text(f"Respondent email. {PERSONAL}")
    phone: Series[str] = _text(f"Respondent phone. {PERSONAL}")
    satisfaction_rating: Series[str] = _text("Overall satisfaction, 1-5.")
    nps: Series[str] = _text("Likelihood to recommend, 0-10.")
    need_product_quality_importance: Series[str] = _text("Importance of product quality, 1-5.")
    need_product_quality_satisfaction: Series[str] = _text(
        "Satisfaction with product quality, 1-5."
    )
    need_price_importance: Series[str] = _text("Importance of price, 1-5.")
    need_price_satisfaction: Series[str] = _text("Satisfaction with price, 1-5.")
    need_delivery_importance: Series[str] = _text("Importance of delivery, 1-5.")
    need_delivery_satisfaction: Series[str] = _text("Satisfaction with delivery, 1-5.")
    need_customer_service_importance: Series[str] = _text("Importance of customer service, 1-5.")
    need_customer_service_satisfaction: Series[str] = _text(
        "Satisfaction with customer service, 1-5."
    )
    need_ease_of_use_importance: Series[str] = _text("Importance of ease of use, 1-5.")
    need_ease_of_use_satisfaction: Series[str] = _text("Satisfaction with ease of use, 1-5.")
    comment: Series[str] = _text(f"Free-text comment; may hold personal data. {PERSONAL}")


class RawProducts(RawRecord):
    """One row per line of reference/products.csv, as delivered."""

    sku: Series[str] = _text("Product SKU.")
    name: Series[str] = _text("Product name.")
    category: Series[str] = _text("Top-level category.")
    subcategory: Series[str] = _text("Subcategory within the category.")
    kind: Series[str] = _text("physical, digital or service.")
    unit_price: Series[str] = _text("List price per unit.")
    unit_cost: Series[str] = _text("Cost per unit.")


class RawStores(RawRecord):
    """One row per line of reference/stores.csv, as delivered."""

    store_id: Series[str] = _text("Store id.")
    city: Series[str] = _text("City of the store.")
    region: Series[str] = _text("Sales region.")


class RawLoyaltyMembers(RawRecord):
    """One row per line of reference/loyalty_members.csv, as delivered."""

    card_no: Series[str] = _text("Loyalty card number.")
    full_name: Series[str] = _text(f"Member name. {PERSONAL}")
    phone: Series[str] = _text(f"Member phone. {PERSONAL}")
    email: Series[str] = _text(f"Member email. {PERSONAL}")
    birth_date: Series[str] = _text(f"Birth date. {PERSONAL}")
    address: Series[str] = _text(f"Postal address. {PERSONAL}")
    income: Series[str] = _text(f"Declared yearly income. {PERSONAL}")
    joined_at: Series[str] = _text("When the member joined.")


class RawRejects(pa.DataFrameModel):
    """One row per delivered record that could not be read into raw, with why."""

    source: Series[str] = pa.Field(description="Source (raw table) the record was meant for.")
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True, description="Delivery day; NULL when the record belongs to no partition."
    )
    source_file: Series[str] = pa.Field(description="File (or shop:<table>) it came from.")
    source_line: Series[int] = pa.Field(
        nullable=True, description="Record number in the file, or row id in the shop table."
    )
    raw_text: Series[str] = pa.Field(
        nullable=True,
        metadata={"personal_data": True},
        description=f"The record as delivered; bytes that are not UTF-8 escaped as \\xNN. {PERSONAL}",
    )
    reason: Series[str] = pa.Field(
        str_matches=r"^[a-z_]+$",
        description=(
            "Rule that rejected it: missing_values, extra_values, invalid_encoding, "
            "unquoted_value, line_too_long, header_mismatch, utf16_text, not_text, line_breaks "
            "(a file set aside whole), invalid_json, no_partition, or "
            "another DuckDB reader error in lower case."
        ),
    )
    detail: Series[str] = pa.Field(description="What was wrong, where, and what to do.")
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When the load ran.")

    class Config:
        strict = True
        coerce = True


class RawDeliveries(pa.DataFrameModel):
    """One row per delivered file (or shop table slice) per source, partition and load."""

    source: Series[str] = pa.Field(description="Source (raw table) the delivery feeds.")
    partition_date: Series[pd.Timestamp] = pa.Field(
        nullable=True,
        description="Delivery day; NULL for snapshots and for shop rows of no partition.",
    )
    source_file: Series[str] = pa.Field(description="File (or shop:<table>) delivered.")
    source_rows: Series[int] = pa.Field(
        ge=0,
        description="Rows delivered: non-empty data lines of a file, rows fetched from the shop.",
    )
    loaded_at: Series[pd.Timestamp] = pa.Field(description="When the load ran.")

    class Config:
        strict = True
        coerce = True


class _ErasureLog(pa.DataFrameModel):
    """What an erasure request leaves (crm-pipeline erase): no personal data."""

    request_id: Series[str] = pa.Field(description="The request (raw.erasures).")
    erased_at: Series[pd.Timestamp] = pa.Field(description="When it was carried out (UTC).")

    class Config:
        strict = True
        coerce = True


class ErasedRecords(_ErasureLog):
    """One row per source record erased on request: each load of raw blanks its personal
    columns again."""

    source: Series[str] = pa.Field(description="Source (raw table) of the record.")
    source_id: Series[str] = pa.Field(description="Its id, as the crosswalk keys it.")
    excluded_as: Series[str] = pa.Field(
        nullable=True,
        description="test_account or staff_account when its customer was excluded as one: "
        "the email that said so is gone, the exclusion stays.",
    )


class Erasures(_ErasureLog):
    """One row per erasure request: when, why, how many customers and records."""

    reason: Series[str] = pa.Field(
        description=f"The reason given (e.g. a ticket number); free text. {PERSONAL}",
        metadata={"personal_data": True},
    )
    customers: Series[int] = pa.Field(ge=1, description="Customer keys erased.")
    records: Series[int] = pa.Field(ge=0, description="Source records erased.")


RAW_MODELS: dict[str, type[RawRecord]] = {
    "online_accounts": RawOnlineAccounts,
    "online_orders": RawOnlineOrders,
    "online_order_items": RawOnlineOrderItems,
    "store_purchases": RawStorePurchases,
    "inquiries": RawInquiries,
    "feedback": RawFeedback,
    "products": RawProducts,
    "stores": RawStores,
    "loyalty_members": RawLoyaltyMembers,
}
