"""Pandera contracts of the analytics layer. No direct personal data here: a customer is its
pseudonymous key, type, city and region."""

from __future__ import annotations

import pandas as pd
from pandera.typing import Series

from crm_pipeline.analytics.rfm import SEGMENTS
from crm_pipeline.analytics.scoring import CHURN_TIERS
from crm_pipeline.core.schemas import CoreModel, key_field
from crm_pipeline.staging.schemas import field


class ScoredCustomers(CoreModel):
    """One row per customer key: every score, segment, tier and rank, as of a day, sorted by
    value (CLV, then value score)."""

    customer_key: Series[str] = key_field()
    customer_type: Series[str] = field("individual, enterprise or organization.", nullable=False)
    city: Series[str] = field("City.")
    region: Series[str] = field("Sales region.")
    r_score: Series[float] = field("Recency quintile, 5 = bought most recently.", ge=1, le=5)
    f_score: Series[float] = field("Frequency quintile, 5 = most orders.", ge=1, le=5)
    m_score: Series[float] = field("Monetary quintile, 5 = most spent.", ge=1, le=5)
    rfm_cell: Series[str] = field("The three scores, e.g. '545'.")
    rfm_segment: Series[str] = field(
        "One of the ten RFM segments (" + ", ".join(SEGMENTS) + "), or No purchase.",
        nullable=False,
        isin=[*SEGMENTS, "No purchase"],
    )
    p_alive: Series[float] = field("BG/NBD probability the customer is still active.", ge=0, le=1)
    expected_purchases_90d: Series[float] = field("Expected purchase days, next 90 days.", ge=0)
    expected_purchases_365d: Series[float] = field("Expected purchase days, next 365 days.", ge=0)
    expected_average_value: Series[float] = field("Gamma-Gamma expected value per purchase.")
    clv_12m: Series[float] = field("Discounted expected value of the next CLV horizon.")
    churn_risk: Series[float] = field("1 - P(alive).", ge=0, le=1)
    churn_tier: Series[str] = field(
        "low (< 0.3), medium (< 0.7) or high churn risk.", isin=list(CHURN_TIERS)
    )
    overdue: Series[bool] = field(
        "Days since last purchase beyond twice the customer's own typical gap.", nullable=False
    )
    value_score: Series[float] = field("Seed value score, 0-100 percentile.", ge=0, le=100)
    satisfaction_score: Series[float] = field("Seed satisfaction score, 0-100.", ge=0, le=100)
    value_rank: Series[int] = field("Rank by value, 1 = most valuable.", nullable=False, ge=1)
    as_of: Series[pd.Timestamp] = field("Day scored as of.", nullable=False)


class ModelRuns(CoreModel):
    """One row per model fit: parameters, fit, data range and time."""

    run_at: Series[pd.Timestamp] = field("When the fit ran.", nullable=False)
    model: Series[str] = field("bgnbd or gamma_gamma.", nullable=False)
    status: Series[str] = field("fitted or skipped (too few customers).", nullable=False)
    parameters: Series[str] = field("Fitted parameters as JSON.", nullable=False)
    log_likelihood: Series[float] = field("Log-likelihood at the optimum.")
    customers: Series[int] = field("Customers in the fit.", nullable=False, ge=0)
    seconds: Series[float] = field("Fit time.", nullable=False, ge=0)
    as_of: Series[pd.Timestamp] = field("Data used: everything up to this day.", nullable=False)
    note: Series[str] = field("Units, convergence, or why it was skipped.", nullable=False)


ANALYTICS_MODELS = {"scored_customers": ScoredCustomers, "model_runs": ModelRuns}
