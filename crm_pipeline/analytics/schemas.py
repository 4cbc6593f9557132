"""Pandera contracts of the analytics layer. No direct personal data here: a customer is its
pseudonymous key, type, city and region."""

from __future__ import annotations

import pandas as pd
from pandera.typing import Series

from crm_pipeline.analytics.needs import QUADRANTS
from crm_pipeline.analytics.rfm import SEGMENTS
from crm_pipeline.analytics.scoring import CHURN_TIERS
from crm_pipeline.core.schemas import CoreModel, as_of_field, key_field
from crm_pipeline.landing import NEED_DIMENSIONS
from crm_pipeline.staging.schemas import field


class ScoredCustomers(CoreModel):
    """One row per customer key: every score, segment, tier and rank, as of a day, sorted by
    value (CLV, then value score)."""

    customer_key: Series[str] = key_field()
    customer_type: Series[str] = field("individual, enterprise or organization.", nullable=False)
    city: Series[str] = field("City.")
    region: Series[str] = field("Sales region.")
    r_score: Series[float] = field(
        "Recency quintile, 5 = bought most recently (every buyer of the latest day), 1 = the "
        "longest ago; other ties share the score of their middle rank, as in f_score and "
        "m_score. The RFM scores and cell are NULL for a customer who never bought.",
        ge=1,
        le=5,
    )
    f_score: Series[float] = field("Frequency quintile, 5 = most orders.", ge=1, le=5)
    m_score: Series[float] = field("Monetary quintile, 5 = most spent.", ge=1, le=5)
    rfm_cell: Series[str] = field("The three scores, e.g. '545'.")
    rfm_segment: Series[str] = field(
        "One of the ten RFM segments (" + ", ".join(SEGMENTS) + "), or No purchase.",
        nullable=False,
        isin=[*SEGMENTS, "No purchase"],
    )
    p_alive: Series[float] = field(
        "BG/NBD probability the customer is still active; 1 for a buyer without a repeat "
        "purchase (the model lets customers drop out only after one). It and the other model "
        "columns (expected purchases and value, clv_12m) are NULL for a customer who never "
        "bought, and for everyone when no usable fit was made (see analytics.model_runs).",
        ge=0,
        le=1,
    )
    expected_purchases_90d: Series[float] = field("Expected purchase days, next 90 days.", ge=0)
    expected_purchases_365d: Series[float] = field("Expected purchase days, next 365 days.", ge=0)
    expected_average_value: Series[float] = field("Gamma-Gamma expected value per purchase.")
    clv_12m: Series[float] = field("Discounted expected value of the next CLV horizon.")
    churn_risk: Series[float] = field(
        "1 - P(alive); NULL for a buyer without a repeat purchase (P(alive) is 1 by the "
        "model's assumption, not by evidence), and for a customer who never bought.",
        ge=0,
        le=1,
    )
    churn_tier: Series[str] = field(
        "low (< 0.3), medium (< 0.7) or high churn risk; rule_churn_tier where the model "
        "gives no risk (a buyer without a repeat purchase; no usable fit); NULL for a customer "
        "who never bought.",
        isin=list(CHURN_TIERS),
    )
    gap_ratio: Series[float] = field(
        "Days since the last purchase / the customer's typical days between purchase days "
        "(90 for one-time buyers); NULL, as rule_churn_tier, for a customer who never bought.",
        ge=0,
    )
    rule_churn_tier: Series[str] = field(
        "Churn by rule on gap_ratio: low (< 1, not yet due), medium (< 2, late) or high (overdue).",
        isin=list(CHURN_TIERS),
    )
    overdue: Series[bool] = field(
        "gap_ratio of 2 or more: at least twice the customer's typical gap since the last "
        "purchase; NULL for a customer who never bought."
    )
    value_score: Series[float] = field(
        "Seed value score, 0-100: its percentile among all customers; 0 for one who never bought.",
        ge=0,
        le=100,
    )
    satisfaction_score: Series[float] = field(
        "Seed satisfaction score, 0-100; for a customer with no survey answer (surveys = 0), "
        "its rating and recommendation parts are the population's means (the complaint part "
        "is the customer's own).",
        ge=0,
        le=100,
    )
    surveys: Series[int] = field("Survey responses given.", nullable=False, ge=0)
    csat: Series[float] = field("CSAT: % of the customer's ratings that are 4 or 5.", ge=0, le=100)
    nps_group: Series[str] = field(
        "NPS group of the latest answer: promoter (9-10), passive (7-8) or detractor (0-6).",
        isin=["promoter", "passive", "detractor"],
    )
    inquiries: Series[int] = field("Helpdesk inquiries opened.", nullable=False, ge=0)
    complaints: Series[int] = field("Inquiries with topic complaint.", nullable=False, ge=0)
    complaint_rate: Series[float] = field("Complaints / inquiries, %.", ge=0, le=100)
    median_first_response_hours: Series[float] = field(
        "Median hours to the first response to the customer's inquiries.", ge=0
    )
    median_resolution_hours: Series[float] = field(
        "Median hours from opening to closing the customer's inquiries.", ge=0
    )
    value_rank: Series[int] = field(
        "Rank by value, 1 = most valuable: by clv_12m, then value_score (missing last); "
        "ties by customer_key.",
        nullable=False,
        ge=1,
    )
    as_of: Series[pd.Timestamp] = as_of_field("Day scored as of")


class ModelRuns(CoreModel):
    """One row per model fit: parameters, fit, data range and time. A fit serves the runs of
    the next refit_days (analysis and mining settings), which log no row of their own."""

    run_at: Series[pd.Timestamp] = field("When the fit ran.", nullable=False)
    model: Series[str] = field(
        "bgnbd, gamma_gamma, bgnbd_holdout (BG/NBD refitted without the holdout period, "
        "its predictions for that period against what happened), association_rules (the "
        "rules mined; parameters: their thresholds; customers: the baskets) or "
        "recommender_holdout (the recommender replayed without the holdout period).",
        nullable=False,
    )
    status: Series[str] = field(
        "fitted, skipped (too few customers) or implausible (fitted but not used: the note "
        "says why).",
        nullable=False,
    )
    parameters: Series[str] = field("Fitted parameters as JSON.", nullable=False)
    log_likelihood: Series[float] = field("Log-likelihood at the optimum.")
    customers: Series[int] = field("Customers in the fit.", nullable=False, ge=0)
    seconds: Series[float] = field("Fit time.", nullable=False, ge=0)
    as_of: Series[pd.Timestamp] = field("Data used: everything up to this day.", nullable=False)
    data_from: Series[pd.Timestamp] = field(
        "First day of the data the fit saw; NULL when it saw none (a holdout check whose "
        "cut-off is before the history's first day)."
    )
    data_to: Series[pd.Timestamp] = field(
        "Last day of the data the fit saw (for a holdout check: the calibration cut-off); "
        "NULL when it saw none."
    )
    note: Series[str] = field("Units, convergence, or why it was skipped.", nullable=False)
    metrics: Series[str] = field(
        "Evaluation figures as JSON, e.g. a holdout check's predicted and actual purchases.",
        nullable=False,
    )
    code: Series[str] = field(
        "Digest of the code that fitted it (the analytics and mining modules, numpy's and "
        "scipy's versions): a fit serves later days only for the same code; NULL: a version "
        "before it was recorded."
    )


def _dimension() -> object:
    return field(
        "Need dimension: " + ", ".join(NEED_DIMENSIONS) + ".",
        nullable=False,
        isin=list(NEED_DIMENSIONS),
    )


class NeedIpa(CoreModel):
    """Importance-performance analysis, one row per breakdown, group and need dimension: mean
    importance and satisfaction (1-5) of the survey answers up to the day, the gap and the
    quadrant. Crosshairs are the means over the group's dimensions."""

    breakdown: Series[str] = field(
        "overall, rfm_segment or customer_type (the customer's, as of the day).",
        nullable=False,
        isin=["overall", "rfm_segment", "customer_type"],
    )
    group_value: Series[str] = field(
        "The segment or type; 'all' for overall; '(unknown)' for answers of no customer known "
        "on the day.",
        nullable=False,
    )
    dimension: Series[str] = _dimension()
    responses: Series[int] = field("Answers with a satisfaction rating.", nullable=False, ge=0)
    importance: Series[float] = field("Mean importance, 1-5.", ge=1, le=5)
    satisfaction: Series[float] = field("Mean satisfaction (performance), 1-5.", ge=1, le=5)
    gap: Series[float] = field("importance - satisfaction; positive: under-served.")
    quadrant: Series[str] = field(
        "; ".join(QUADRANTS) + " (high importance and low satisfaction is Concentrate here).",
        nullable=False,
        isin=list(QUADRANTS),
    )
    as_of: Series[pd.Timestamp] = as_of_field()


class CustomerNeeds(CoreModel):
    """The seed's need score, one row per customer and need dimension the customer answered:
    need_score = need_satisfaction x need_importance of the customer's mean answers."""

    customer_key: Series[str] = key_field()
    dimension: Series[str] = _dimension()
    importance: Series[float] = field("The customer's mean importance, 1-5.", ge=1, le=5)
    satisfaction: Series[float] = field("The customer's mean satisfaction, 1-5.", ge=1, le=5)
    need_score: Series[float] = field("satisfaction x importance, 1-25.", ge=1, le=25)
    need_score_100: Series[float] = field(
        "need_score scaled 0-100: 100 x (need_score - 1) / 24.", ge=0, le=100
    )
    as_of: Series[pd.Timestamp] = as_of_field()


class UnmetNeeds(CoreModel):
    """Needs the sales record does not show, from helpdesk inquiries up to the day, one row per
    topic and product category: pre_sales (a question before buying: demand to serve) and
    complaint (bought, not satisfied)."""

    topic: Series[str] = field(
        "pre_sales or complaint.", nullable=False, isin=["pre_sales", "complaint"]
    )
    category: Series[str] = field(
        "Product category of the inquiry's SKU; '(no product)' when it names none.",
        nullable=False,
    )
    inquiries: Series[int] = field("Inquiries.", nullable=False, ge=1)
    customers: Series[int] = field("Distinct known customers who asked.", nullable=False, ge=0)
    share_of_topic: Series[float] = field(
        "% of the topic's inquiries.", nullable=False, ge=0, le=100
    )
    buyers: Series[int] = field("Customers who bought in the category.", nullable=False, ge=0)
    per_100_buyers: Series[float] = field("inquiries per 100 buyers of the category.", ge=0)
    median_resolution_hours: Series[float] = field("Median hours from opening to closing.", ge=0)
    topic_rank: Series[int] = field(
        "1 = the topic's category with most inquiries.", nullable=False, ge=1
    )
    as_of: Series[pd.Timestamp] = as_of_field()


class SatisfactionSummary(CoreModel):
    """The standard satisfaction measures, one row per breakdown and group, up to the day.
    Surveys and inquiries are placed by the customer's attributes as of the day (segment,
    type, preferred purchase channel, home store: the store of most store purchase days, top
    category by spend) and by their own month; inquiries also by their contact channel and by
    the category of the product they name."""

    breakdown: Series[str] = field(
        "overall, rfm_segment, customer_type, purchase_channel, contact_channel, store, "
        "category or month.",
        nullable=False,
        isin=[
            "overall",
            "rfm_segment",
            "customer_type",
            "purchase_channel",
            "contact_channel",
            "store",
            "category",
            "month",
        ],
    )
    group_value: Series[str] = field(
        "The group; 'all' for overall, 'YYYY-MM' for a month; '(unknown)' when the customer "
        "is not known on the day, '(no store purchase)', '(no purchase)' or '(no product)' "
        "when there is nothing to place it by.",
        nullable=False,
    )
    responses: Series[int] = field("Survey responses.", nullable=False, ge=0)
    csat: Series[float] = field("% of ratings that are 4 or 5.", ge=0, le=100)
    nps: Series[float] = field("% promoters (9-10) minus % detractors (0-6).", ge=-100, le=100)
    mean_rating: Series[float] = field("Mean overall rating, 1-5.", ge=1, le=5)
    inquiries: Series[int] = field("Helpdesk inquiries.", nullable=False, ge=0)
    complaints: Series[int] = field("Inquiries with topic complaint.", nullable=False, ge=0)
    complaint_rate: Series[float] = field("complaints / inquiries, %.", ge=0, le=100)
    median_first_response_hours: Series[float] = field("Median hours to first response.", ge=0)
    median_resolution_hours: Series[float] = field("Median hours to close.", ge=0)
    as_of: Series[pd.Timestamp] = as_of_field()


ANALYTICS_MODELS = {
    "scored_customers": ScoredCustomers,
    "model_runs": ModelRuns,
    "need_ipa": NeedIpa,
    "customer_needs": CustomerNeeds,
    "unmet_needs": UnmetNeeds,
    "satisfaction_summary": SatisfactionSummary,
}
