"""The seed's value_score = income x purchase_frequency x loyalty, every component defined.

- income: the declared yearly income; when missing, the median of customers of the same
  type (then of everyone), the documented imputation, flagged in income_imputed;
- purchase_frequency: orders per active month, active months counted from the first
  purchase to the as-of day (at least 1);
- loyalty (0-1): half tenure, half retention. Tenure is years since the customer was first
  seen, capped at loyalty_years; retention is the share of active months with a purchase.
The product is scaled 0-100 by percentile rank, so one very rich or very busy customer does
not squash everyone else's score to zero; a customer who never bought scores 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DAYS_PER_MONTH = 365.25 / 12


def value_scores(customers: pd.DataFrame, loyalty_years: float = 3.0) -> pd.DataFrame:
    """customers: customer_type, income, orders, active_months, months_with_purchase,
    tenure_days. Returns the components, value_raw and value_score (0-100)."""
    by_type = customers.groupby("customer_type")["income"].transform("median")
    income = customers["income"].fillna(by_type).fillna(customers["income"].median())
    active = customers["active_months"].clip(lower=1)
    frequency = customers["orders"] / active
    tenure = (customers["tenure_days"] / 365.25 / loyalty_years).clip(0, 1)
    retention = (customers["months_with_purchase"] / active).clip(0, 1)
    loyalty = 0.5 * tenure + 0.5 * retention
    raw = income * frequency * loyalty
    # A customer who never bought scores 0, not the percentile of everyone tied at nothing;
    # every other customer is ranked among all of them.
    bought = customers["orders"] > 0
    score = (raw.rank(pct=True, method="average") * 100).where(bought, 0.0) if len(raw) else raw
    return pd.DataFrame(
        {
            "income_used": income,
            "income_imputed": customers["income"].isna(),
            "purchase_frequency": frequency,
            "loyalty": loyalty,
            "value_raw": raw,
            "value_score": np.round(score, 2),
        },
        index=customers.index,
    )
