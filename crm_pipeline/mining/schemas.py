"""Pandera contracts of the mining layer. Customers appear only as their pseudonymous key."""

import pandas as pd
from pandera.typing import Series

from crm_pipeline.core.schemas import CoreModel, key_field
from crm_pipeline.mining.recommend import EVIDENCE
from crm_pipeline.mining.rules import LEVELS
from crm_pipeline.staging.schemas import field


def _as_of() -> object:
    return field("Day computed as of; nothing after it is used.", nullable=False)


def _share(what: str) -> object:
    return field(what, nullable=False, ge=0, le=1)


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
    as_of: Series[pd.Timestamp] = _as_of()


class Recommendations(CoreModel):
    """The next-best products per customer: the top N products the customer has not bought,
    by the estimated chance a line of their next basket is the product (half what everyone
    buys, half what their own categories sell), each with the strongest evidence for it and a
    plain reason."""

    customer_key: Series[str] = key_field()
    rank: Series[int] = field("1 = the best recommendation.", nullable=False, ge=1)
    sku: Series[str] = field("The recommended product.", nullable=False)
    product: Series[str] = field("Its name.")
    category: Series[str] = field("Its category.")
    score: Series[float] = _share(
        "1/2 its share of all purchase lines + 1/2 the customer's share of lines in its "
        "category x its share of that category's lines."
    )
    rule_level: Series[str] = field(
        "The evidence: product (a product rule from a product they bought), category (a "
        "category rule from a category they buy), affinity (they buy in its category, where it "
        "sells best) or popularity (a best seller).",
        nullable=False,
        isin=list(EVIDENCE),
    )
    antecedent: Series[str] = field(
        "The rule's antecedent the customer bought (the category, for affinity); NULL for a "
        "best seller."
    )
    consequent: Series[str] = field("The rule's consequent; NULL for a best seller.")
    confidence: Series[float] = field(
        "The rule's confidence (for affinity: the customer's share of lines in the category).",
        ge=0,
        le=1,
    )
    lift: Series[float] = field("The rule's lift.", ge=0)
    reason: Series[str] = field("Why, in words a sales team can act on.", nullable=False)
    as_of: Series[pd.Timestamp] = _as_of()


MINING_MODELS = {
    "association_rules": AssociationRules,
    "recommendations": Recommendations,
}
