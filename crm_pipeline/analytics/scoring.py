"""Scored customers: every score for every customer, as of a day, from the building blocks.

Standard methods (RFM, BG/NBD + Gamma-Gamma CLV, P(alive)) sit beside the seed formulas
(value_score, satisfaction_score). Churn risk is 1 - P(alive) in tiers, and a rule flag:
days since the last purchase beyond twice the customer's own typical gap (mean days between
purchase days; 90 days for one-time buyers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crm_pipeline.analytics.clv import (
    WEEKS_PER_MONTH,
    clv,
    expected_average_value,
    expected_purchases,
    fit_bgnbd,
    fit_gamma_gamma,
    p_alive,
)
from crm_pipeline.analytics.rfm import rfm_scores
from crm_pipeline.analytics.satisfaction import satisfaction_scores
from crm_pipeline.analytics.value import value_scores

MIN_CUSTOMERS_TO_FIT = 50
MIN_REPEAT_BUYERS_TO_FIT = 20
ONE_TIME_GAP_DAYS = 90
CHURN_TIERS = ("low", "medium", "high")


@dataclass(frozen=True)
class ModelRun:
    model: str
    status: str  # fitted or skipped
    parameters: dict
    log_likelihood: float | None
    customers: int
    seconds: float
    note: str


def churn_tier(risk: pd.Series) -> pd.Series:
    """low below 0.3, medium below 0.7, high from 0.7 (NULL when unknown)."""
    tiers = pd.cut(risk, bins=[-0.01, 0.3, 0.7, 1.0], labels=list(CHURN_TIERS), right=False)
    return tiers.astype(object).where(risk.notna(), None)


def _fit_clv(
    features: pd.DataFrame, months: int, discount: float
) -> tuple[pd.DataFrame, list[ModelRun]]:
    out = pd.DataFrame(index=features.index, dtype=float)
    runs = []
    repeaters = features[(features["x"] > 0) & (features["m_x"] > 0)]
    if len(features) < MIN_CUSTOMERS_TO_FIT or len(repeaters) < MIN_REPEAT_BUYERS_TO_FIT:
        note = (
            f"{len(features)} buyers and {len(repeaters)} repeat buyers: fewer than "
            f"{MIN_CUSTOMERS_TO_FIT} and {MIN_REPEAT_BUYERS_TO_FIT} needed to fit"
        )
        for model in ("bgnbd", "gamma_gamma"):
            runs.append(ModelRun(model, "skipped", {}, None, len(features), 0.0, note))
        for column in (
            "p_alive",
            "expected_purchases_90d",
            "expected_purchases_365d",
            "expected_average_value",
            "clv_12m",
        ):
            out[column] = np.nan
        return out, runs
    x, t_x, T = (features[c].to_numpy(float) for c in ("x", "t_x", "T"))
    started = time.perf_counter()
    bg = fit_bgnbd(x, t_x, T)
    runs.append(
        ModelRun(
            "bgnbd",
            "fitted",
            {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b},
            bg.log_likelihood,
            bg.n,
            time.perf_counter() - started,
            "weeks; converged" if bg.converged else "weeks; did not converge",
        )
    )
    started = time.perf_counter()
    gg = fit_gamma_gamma(repeaters["x"].to_numpy(float), repeaters["m_x"].to_numpy(float))
    runs.append(
        ModelRun(
            "gamma_gamma",
            "fitted",
            {"p": gg.p, "q": gg.q, "gamma": gg.gamma},
            gg.log_likelihood,
            gg.n,
            time.perf_counter() - started,
            "converged" if gg.converged else "did not converge",
        )
    )
    m_x = features["m_x"].fillna(0).to_numpy(float)
    out["p_alive"] = p_alive(bg, x, t_x, T)
    out["expected_purchases_90d"] = expected_purchases(bg, 90 / 7, x, t_x, T)
    out["expected_purchases_365d"] = expected_purchases(bg, 365 / 7, x, t_x, T)
    out["expected_average_value"] = expected_average_value(gg, x, m_x)
    out["clv_12m"] = clv(
        bg,
        gg,
        x,
        t_x,
        T,
        m_x,
        periods_per_month=WEEKS_PER_MONTH,
        months=months,
        discount_rate_yearly=discount,
    )
    return out, runs


def score_customers(
    customers: pd.DataFrame,
    features: pd.DataFrame,
    feedback: pd.DataFrame,
    inquiries: pd.DataFrame,
    months: int = 12,
    discount_rate: float = 0.10,
) -> tuple[pd.DataFrame, list[ModelRun]]:
    """customers: indexed by customer_key with customer_type, city, region, income,
    tenure_days; features: customer_features(); feedback and inquiries as of the day."""
    scored = customers[["customer_type", "city", "region"]].copy()
    bought = features.reindex(scored.index)
    buyers = features.index.intersection(scored.index)
    rfm = rfm_scores(features.loc[buyers])
    scored = scored.join(rfm)
    scored["rfm_segment"] = scored["rfm_segment"].fillna("No purchase")
    model, runs = _fit_clv(features.loc[buyers], months, discount_rate)
    scored = scored.join(model)
    scored["churn_risk"] = 1 - scored["p_alive"]
    scored["churn_tier"] = churn_tier(scored["churn_risk"])
    gap = (bought["t_x"] * 7 / bought["x"].where(bought["x"] > 0)).fillna(ONE_TIME_GAP_DAYS)
    scored["overdue"] = (bought["recency_days"] > 2 * gap).fillna(False).astype(bool)
    values = value_scores(
        pd.DataFrame(
            {
                "customer_type": customers["customer_type"],
                "income": customers["income"],
                "orders": bought["frequency"].fillna(0),
                "active_months": bought["active_months"].fillna(0),
                "months_with_purchase": bought["months_with_purchase"].fillna(0),
                "tenure_days": customers["tenure_days"].fillna(0),
            }
        )
    )
    scored["value_score"] = values["value_score"]
    satisfaction = satisfaction_scores(scored.index, feedback, inquiries)
    scored["satisfaction_score"] = satisfaction["satisfaction_score"]
    scored = scored.sort_values(["clv_12m", "value_score"], ascending=False, na_position="last")
    scored["value_rank"] = np.arange(1, len(scored) + 1)
    return scored, runs
