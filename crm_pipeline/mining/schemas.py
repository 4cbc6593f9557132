"""Pandera contracts of the mining layer. Customers appear only as their pseudonymous key."""

import pandas as pd
from pandera.typing import Series

from crm_pipeline.core.schemas import CoreModel, as_of_field, key_field
from crm_pipeline.mining.opportunities import TYPES
from crm_pipeline.mining.recommend import EVIDENCE
from crm_pipeline.mining.rules import LEVELS
from crm_pipeline.staging.schemas import field


def _share(what: str) -> object:
    """A share or probability, from 0 to 1 (a rate of customers, orders or inquiries is a %)."""
    return field(f"{what.rstrip('.')}; 0 to 1.", nullable=False, ge=0, le=1)


class AssociationRules(CoreModel):
    """One row per rule antecedent -> consequent, at product (SKU) or category level, mined
    from baskets (an online order or a store receipt) up to the day, above the thresholds of
    the mining resource."""

    level: Series[str] = field("product or category.", nullable=False, isin=list(LEVELS))
    antecedent: Series[str] = field("What the basket holds: a SKU or a category.", nullable=False)
    consequent: Series[str] = field("What it then also holds.", nullable=False)
    baskets: Series[int] = field("Baskets holding both.", nullable=False, ge=1)
    support: Series[float] = _share("Share of baskets holding both.")
    antecedent_support: Series[float] = _share("Share of baskets holding the antecedent.")
    consequent_support: Series[float] = _share("Share of baskets holding the consequent.")
    confidence: Series[float] = _share("P(consequent | antecedent).")
    lift: Series[float] = field("confidence / consequent support; 1 = independent.", ge=0)
    leverage: Series[float] = field(
        "support - antecedent support x consequent support; 0 = independent.", ge=-1, le=1
    )
    conviction: Series[float] = field(
        "(1 - consequent support) / (1 - confidence); NULL (infinite) when confidence is 1.",
        ge=0,
    )
    antecedent_rank: Series[int] = field(
        "Rank among the antecedent's rules by confidence, then lift.", nullable=False, ge=1
    )
    as_of: Series[pd.Timestamp] = as_of_field()


class Recommendations(CoreModel):
    """The next-best products per buyer (every customer with a purchase up to the day; one who
    never bought gets none): the top N products the customer has not bought (nor returned or
    been given: a refunded or free line is no sale, but not recommended back either),
    by the estimated chance a line of their next basket is the product (half what everyone
    buys, half what their own categories sell), each with the strongest evidence for it and a
    plain reason."""

    customer_key: Series[str] = key_field()
    rank: Series[int] = field("1 = the best recommendation.", nullable=False, ge=1)
    sku: Series[str] = field("The recommended product.", nullable=False)
    product: Series[str] = field("Its name.")
    category: Series[str] = field("Its category.")
    score: Series[float] = _share(
        "1/2 its share of the purchase lines of known customers (not of anonymous receipts) "
        "+ 1/2 the customer's share of lines in its category x its share of that category's "
        "lines."
    )
    rule_level: Series[str] = field(
        "The evidence: product (a product rule from a product they bought and kept, not one "
        "returned or given free), category (a "
        "category rule from a category they buy), affinity (they buy in its category, where it "
        "sells best) or popularity (a best seller).",
        nullable=False,
        isin=list(EVIDENCE),
    )
    antecedent: Series[str] = field(
        "The rule's antecedent the customer bought (the category, for affinity); NULL for a "
        "best seller."
    )
    consequent: Series[str] = field(
        "The rule's consequent (the category, for affinity); NULL for a best seller."
    )
    confidence: Series[float] = field(
        "The rule's confidence (for affinity: the customer's share of lines in the category); "
        "NULL for a best seller.",
        ge=0,
        le=1,
    )
    lift: Series[float] = field("The rule's lift; NULL for affinity and a best seller.", ge=0)
    reason: Series[str] = field("Why, in words a sales team can act on.", nullable=False)
    as_of: Series[pd.Timestamp] = as_of_field()


class SalesEfficiency(CoreModel):
    """Where selling works: one row per breakdown and group, from sales up to the day (lines
    not refunded and not given free; net of discounts and refunds). Revenue, units and margin
    also count the lines given free (their units and cost). Inquiry figures only where an
    inquiry has a place (overall, the category of the product it names, its month)."""

    breakdown: Series[str] = field(
        "overall, channel, store, category or month.",
        nullable=False,
        isin=["overall", "channel", "store", "category", "month"],
    )
    group_value: Series[str] = field(
        "The group: 'all', online or store, a store id ('(online)' for online sales), a "
        "category, or 'YYYY-MM'.",
        nullable=False,
    )
    revenue: Series[float] = field("Net revenue.", nullable=False)
    orders: Series[int] = field(
        "Online orders and store receipts holding a sale.", nullable=False, ge=0
    )
    average_order_value: Series[float] = field("revenue / orders.")
    units: Series[float] = field("Units sold or given free.", ge=0)
    margin: Series[float] = field("Net revenue - cost, where the cost is known.")
    margin_rate: Series[float] = field("margin / revenue of the lines with a known cost, %.")
    customers: Series[int] = field("Distinct known customers.", nullable=False, ge=0)
    repeat_purchase_rate: Series[float] = field(
        "% of the group's customers with two or more orders in it.", ge=0, le=100
    )
    inquiries: Series[float] = field("Helpdesk inquiries in the group.", ge=0)
    median_first_response_hours: Series[float] = field("Median hours to first response.", ge=0)
    median_resolution_hours: Series[float] = field("Median hours to close.", ge=0)
    revenue_per_inquiry: Series[float] = field("revenue / inquiries.")
    as_of: Series[pd.Timestamp] = as_of_field()


class CohortRetention(CoreModel):
    """Monthly cohort retention: one row per first-purchase month and months since it (a
    purchase: a line not refunded and not given free)."""

    cohort_month: Series[str] = field("Month of the first purchase, YYYY-MM.", nullable=False)
    months_since: Series[int] = field("Months after the cohort month.", nullable=False, ge=0)
    cohort_customers: Series[int] = field("Customers in the cohort.", nullable=False, ge=1)
    active_customers: Series[int] = field(
        "Of them, customers who bought in that month.", nullable=False, ge=0
    )
    retention: Series[float] = field("active / cohort customers, %.", nullable=False, ge=0, le=100)
    as_of: Series[pd.Timestamp] = as_of_field()


class InquiryConversion(CoreModel):
    """Inquiry-to-order conversion: one row per topic and contact channel, over inquiries of
    known customers whose window (window_days after opening) closed by the day. An inquiry
    converts when the customer orders within the window, in the same category if it names a
    product (a line not refunded and not given free)."""

    topic: Series[str] = field("Inquiry topic.", nullable=False)
    channel: Series[str] = field("Contact channel: chat, email, phone or web_form.", nullable=False)
    inquiries: Series[int] = field("Inquiries counted.", nullable=False, ge=1)
    converted: Series[int] = field("Followed by an order in the window.", nullable=False, ge=0)
    conversion_rate: Series[float] = field(
        "converted / inquiries, %.", nullable=False, ge=0, le=100
    )
    revenue: Series[float] = field(
        "Net revenue of the order lines that converted them, in the window: the lines in the "
        "inquiry's category when it names a product, every line when it does not.",
        nullable=False,
    )
    revenue_per_inquiry: Series[float] = field("revenue / inquiries.", nullable=False)
    median_first_response_hours: Series[float] = field("Median hours to first response.", ge=0)
    median_resolution_hours: Series[float] = field("Median hours to close.", ge=0)
    window_days: Series[int] = field("Days after opening an order counts.", nullable=False, ge=0)
    as_of: Series[pd.Timestamp] = as_of_field()


class Penetration(CoreModel):
    """The segment-by-category penetration matrix over the last 365 days up to the day: one
    row per segment (customer type x region) and category, against the same customer type
    everywhere."""

    customer_type: Series[str] = field("individual, enterprise or organization.", nullable=False)
    region: Series[str] = field(
        "Sales region of the customers; '(no region)' if unknown.", nullable=False
    )
    category: Series[str] = field("Product category.", nullable=False)
    segment_buyers: Series[int] = field("The segment's buyers in the year.", nullable=False, ge=1)
    category_buyers: Series[int] = field("Of them, buyers of the category.", nullable=False, ge=0)
    penetration: Series[float] = field(
        "category_buyers / segment_buyers, %.", nullable=False, ge=0, le=100
    )
    comparable_penetration: Series[float] = field(
        "The same %, over the customer type in every region.", nullable=False, ge=0, le=100
    )
    revenue_per_buyer: Series[float] = field(
        "What a buyer of the category of the customer type spent in the year, over every "
        "region (the same in each of the type's segments)."
    )
    whitespace: Series[bool] = field(
        "penetration below whitespace_ratio x comparable, in a segment of at least "
        "min_segment_buyers whose region is known.",
        nullable=False,
    )
    gap_value: Series[float] = field(
        "(comparable - penetration) / 100 x segment buyers x revenue per buyer when positive, "
        "else 0.",
        nullable=False,
        ge=0,
    )
    as_of: Series[pd.Timestamp] = as_of_field()


class Opportunities(CoreModel):
    """Where revenue can grow, ranked within each type: whitespace (a segment buying a category
    far less than comparable segments), regional and city growth (each a type of its own: a
    region's sales hold its cities'), win-back of valuable customers at risk, cross-sell and
    upsell; each with an estimated value (yearly, but for cross-sell: one sale) and a plain
    reason."""

    type: Series[str] = field(", ".join(TYPES) + ".", nullable=False, isin=list(TYPES))
    target_kind: Series[str] = field(
        "customer, segment (customer type / region), region or city.",
        nullable=False,
        isin=["customer", "segment", "region", "city"],
    )
    target: Series[str] = field(
        "The customer key, the segment, the region or the city.", nullable=False
    )
    category: Series[str] = field("The product category it is about, if any.")
    estimated_value: Series[float] = field(
        "Estimated yearly revenue of acting on it (see the type's rule); for cross_sell, the "
        "expected revenue of the one sale (confidence x price).",
        nullable=False,
        gt=0,
    )
    reason: Series[str] = field("Why, in words a sales team can act on.", nullable=False)
    rank: Series[int] = field("Rank within the type by value, 1 = largest.", nullable=False, ge=1)
    as_of: Series[pd.Timestamp] = as_of_field()


MINING_MODELS = {
    "penetration": Penetration,
    "opportunities": Opportunities,
    "sales_efficiency": SalesEfficiency,
    "cohort_retention": CohortRetention,
    "inquiry_conversion": InquiryConversion,
    "association_rules": AssociationRules,
    "recommendations": Recommendations,
}
