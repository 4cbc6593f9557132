"""Scored customers: every score for every customer, as of a day, from the building blocks.

Standard methods (RFM, BG/NBD + Gamma-Gamma CLV, P(alive)) sit beside the seed formulas
(value_score, satisfaction_score). Churn risk is 1 - P(alive) in tiers (low below 0.3, medium
below 0.7, high), and by rule: gap_ratio = days since the last purchase / the customer's own
typical gap (mean days between purchase days; 90 days for one-time buyers), in tiers low (below
1: not yet due), medium (1 to 2: late) and high (2 or more: overdue).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from crm_pipeline.analytics.clv import (
    WEEKS_PER_MONTH,
    BgNbdFit,
    bgnbd_implausible,
    clv,
    expected_purchases,
    fit_bgnbd,
    p_alive,
)
from crm_pipeline.analytics.gamma_gamma import (
    GammaGammaFit,
    expected_average_value,
    fit_gamma_gamma,
    implausible,
)
from crm_pipeline.analytics.holdout import holdout_check
from crm_pipeline.analytics.rfm import rfm_scores
from crm_pipeline.analytics.satisfaction import customer_measures, satisfaction_scores
from crm_pipeline.analytics.value import value_scores

ONE_TIME_GAP_DAYS = 90
CHURN_TIERS = ("low", "medium", "high")
KEY = "customer_key"


@dataclass(frozen=True)
class Minimums:
    """The least data a fit needs: buyers, and repeat buyers with a positive spend."""

    buyers: int = 50
    repeat_buyers: int = 20

    def shortfall(self, buyers: int, repeat_buyers: int, period: str = "") -> str | None:
        """Why a fit is skipped, or None when there is enough data."""
        if buyers >= self.buyers and repeat_buyers >= self.repeat_buyers:
            return None
        return (
            f"{period}{buyers} buyers and {repeat_buyers} repeat buyers: fewer than "
            f"{self.buyers} and {self.repeat_buyers} needed to fit"
        )


@dataclass(frozen=True)
class ModelRun:
    model: str
    status: str  # fitted or skipped
    parameters: dict
    log_likelihood: float | None
    customers: int
    seconds: float
    note: str
    metrics: dict = field(default_factory=dict)


def _tiers(values: pd.Series, medium: float, high: float) -> pd.Series:
    tiers = pd.cut(
        values, bins=[-np.inf, medium, high, np.inf], labels=list(CHURN_TIERS), right=False
    )
    return tiers.astype(object).where(values.notna(), None)


def churn_tier(risk: pd.Series) -> pd.Series:
    """low below 0.3, medium below 0.7, high from 0.7 (NULL when unknown)."""
    return _tiers(risk, 0.3, 0.7)


def rule_churn_tier(gap_ratio: pd.Series) -> pd.Series:
    """low below 1 (not yet due), medium below 2 (late), high from 2 (overdue); NULL when the
    customer never bought."""
    return _tiers(gap_ratio, 1.0, 2.0)


def holdout_run(
    calibration: pd.DataFrame, actual: pd.Series, holdout_days: int, minimums: Minimums
) -> ModelRun:
    """The BG/NBD holdout check as a model run (skipped when the calibration period has too
    few buyers to fit)."""
    repeaters = int((calibration["x"] > 0).sum())
    note = minimums.shortfall(len(calibration), repeaters, "calibration period: ")
    if note:
        return ModelRun("bgnbd_holdout", "skipped", {}, None, len(calibration), 0.0, note)
    started = time.perf_counter()
    try:
        fit, figures = holdout_check(calibration, actual, holdout_days / 7)
    except ValueError as error:  # a fit gone to extremes cannot predict (see _fit_clv)
        return ModelRun(
            "bgnbd_holdout",
            "implausible",
            {},
            None,
            len(calibration),
            time.perf_counter() - started,
            f"not used: {error}",
        )
    extremes = bgnbd_implausible(fit)
    if extremes:
        run = _bgnbd_run("bgnbd_holdout", fit, time.perf_counter() - started, "")
        return replace(run, status="implausible", note=f"not used: {extremes}")
    return _bgnbd_run(
        "bgnbd_holdout",
        fit,
        time.perf_counter() - started,
        f"fitted without the last {holdout_days} days; predicted "
        f"{figures['predicted_purchases']:,.0f} purchase days in them, actual "
        f"{figures['actual_purchases']:,.0f} ({figures['error_pct']:+}%)",
        figures,
    )


def _bgnbd_run(
    model: str, fit: BgNbdFit, seconds: float, note: str, metrics: dict | None = None
) -> ModelRun:
    parameters = {"r": fit.r, "alpha": fit.alpha, "a": fit.a, "b": fit.b}
    return ModelRun(
        model, "fitted", parameters, fit.log_likelihood, fit.n, seconds, note, metrics or {}
    )


@dataclass(frozen=True)
class ClvFits:
    """Fitted BG/NBD and Gamma-Gamma parameters, to score with again instead of refitting."""

    bgnbd: BgNbdFit
    gamma_gamma: GammaGammaFit


# What the CLV models give each customer.
MODEL_COLUMNS = (
    "p_alive",
    "expected_purchases_90d",
    "expected_purchases_365d",
    "expected_average_value",
    "clv_12m",
)


def _fit_clv(
    features: pd.DataFrame,
    months: int,
    discount: float,
    minimums: Minimums,
    reused: ClvFits | None = None,
) -> tuple[pd.DataFrame, list[ModelRun]]:
    out = pd.DataFrame(index=features.index, dtype=float)
    runs = []
    repeaters = features[(features["x"] > 0) & (features["m_x"] > 0)]
    note = minimums.shortfall(len(features), len(repeaters))
    if note:
        for model in ("bgnbd", "gamma_gamma"):
            runs.append(ModelRun(model, "skipped", {}, None, len(features), 0.0, note))
        out[list(MODEL_COLUMNS)] = np.nan
        return out, runs
    x, t_x, T = (features[c].to_numpy(float) for c in ("x", "t_x", "T"))
    why_not = None  # reused fits were plausible when made
    if reused:
        bg, gg = reused.bgnbd, reused.gamma_gamma
    else:
        started = time.perf_counter()
        bg = fit_bgnbd(x, t_x, T)
        runs.append(
            _bgnbd_run(
                "bgnbd",
                bg,
                time.perf_counter() - started,
                "weeks; converged" if bg.converged else "weeks; did not converge",
            )
        )
        started = time.perf_counter()
        spends = repeaters["m_x"].to_numpy(float)
        gg = fit_gamma_gamma(repeaters["x"].to_numpy(float), spends)
        why_not = implausible(gg, spends)
        converged = "converged" if gg.converged else "did not converge"
        runs.append(
            ModelRun(
                "gamma_gamma",
                "implausible" if why_not else "fitted",
                {"p": gg.p, "q": gg.q, "gamma": gg.gamma},
                gg.log_likelihood,
                gg.n,
                time.perf_counter() - started,
                f"not used: {why_not}; expected value and CLV left empty" if why_not else converged,
            )
        )
    m_x = features["m_x"].fillna(0).to_numpy(float)
    extremes = bgnbd_implausible(bg)
    if extremes:
        return _model_left_empty(out, runs, bg, f"not used: {extremes}")
    try:
        out["p_alive"] = p_alive(bg, x, t_x, T)
        out["expected_purchases_90d"] = expected_purchases(bg, 90 / 7, x, t_x, T)
        out["expected_purchases_365d"] = expected_purchases(bg, 365 / 7, x, t_x, T)
    except ValueError as error:
        # A fit gone to extremes (a short history in which nobody seems to drop out) cannot
        # score every customer: it is not used, as an implausible Gamma-Gamma fit is not.
        return _model_left_empty(out, runs, bg, f"not used: {error}")
    if why_not:
        out["expected_average_value"] = out["clv_12m"] = np.nan
        return out, runs
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


def _model_left_empty(
    out: pd.DataFrame, runs: list[ModelRun], bg: BgNbdFit, note: str
) -> tuple[pd.DataFrame, list[ModelRun]]:
    """Every model column empty, and the BG/NBD fit logged as implausible with why."""
    out[list(MODEL_COLUMNS)] = np.nan
    note += "; P(alive), expected purchases and CLV left empty"
    # The fit of this run, or a reused one: logged as not used either way.
    fitted = next((r for r in runs if r.model == "bgnbd"), None) or _bgnbd_run("bgnbd", bg, 0, "")
    logged = replace(fitted, status="implausible", note=note)
    return out, [logged, *(r for r in runs if r.model != "bgnbd")]


def score_customers(
    customers: pd.DataFrame,
    features: pd.DataFrame,
    feedback: pd.DataFrame,
    inquiries: pd.DataFrame,
    months: int = 12,
    discount_rate: float = 0.10,
    minimums: Minimums = Minimums(),
    reused: ClvFits | None = None,
) -> tuple[pd.DataFrame, list[ModelRun]]:
    """customers: indexed by customer_key with customer_type, city, region, income,
    tenure_days; features: customer_features(); feedback (customer_key, submitted_at,
    satisfaction_rating, nps) and inquiries (customer_key, topic, first_response_hours,
    resolution_hours) as of the day. reused: CLV parameters to score with instead of fitting
    (then no model run is returned for them)."""
    # Customers are numbered once and aligned by number: aligning frames on a million string
    # keys costs a fraction of a second each time, and scoring aligns a few dozen times.
    keys = customers.index
    customers = customers.set_axis(pd.RangeIndex(len(keys)))
    features = features.set_axis(keys.get_indexer(features.index))
    feedback, inquiries = (
        frame.assign(customer_key=pd.array(keys.get_indexer(frame[KEY]), dtype="Int64")).replace(
            {KEY: {-1: pd.NA}}
        )
        for frame in (feedback, inquiries)
    )
    scored = customers[["customer_type", "city", "region"]].copy()
    bought = features.reindex(scored.index)
    buyers = features.index.intersection(scored.index)
    rfm = rfm_scores(features.loc[buyers])
    scored = scored.join(rfm)
    scored["rfm_segment"] = scored["rfm_segment"].fillna("No purchase")
    model, runs = _fit_clv(features.loc[buyers], months, discount_rate, minimums, reused)
    scored = scored.join(model)
    gap = (bought["t_x"] * 7 / bought["x"].where(bought["x"] > 0)).fillna(ONE_TIME_GAP_DAYS)
    scored["gap_ratio"] = bought["recency_days"] / gap
    # BG/NBD lets a customer drop out only after a repeat purchase, so it holds every buyer
    # without one alive (P(alive) = 1, however long ago they bought): no evidence of churn.
    # Their churn risk is left empty and their tier is the rule's.
    one_time = bought["x"].eq(0).to_numpy()
    scored["churn_risk"] = (1 - scored["p_alive"]).mask(one_time)
    scored["rule_churn_tier"] = rule_churn_tier(scored["gap_ratio"])
    # The rule's tier, too, where the model gives no risk (one-time buyers; a fit skipped for
    # too little data, or not used).
    scored["churn_tier"] = churn_tier(scored["churn_risk"]).mask(
        one_time | scored["churn_risk"].isna().to_numpy(), scored["rule_churn_tier"]
    )
    # Unknown, not "not overdue", for a customer who never bought.
    scored["overdue"] = (
        (scored["gap_ratio"] >= 2).astype("boolean").mask(scored["gap_ratio"].isna())
    )
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
    scored = scored.join(customer_measures(scored.index, feedback, inquiries))
    return rank_by_value(scored.set_axis(keys[scored.index])), runs


def rank_by_value(scored: pd.DataFrame) -> pd.DataFrame:
    """Customers (indexed by key, in key order) with their value_rank: by 12-month CLV, then
    value score, highest first, missing last; ties (such as every customer without a purchase
    and with the same score) go by key, so the ranks do not depend on the rows' order."""
    if not scored.index.is_monotonic_increasing:
        scored = scored.sort_index()
    else:
        scored = scored.copy(deep=False)

    def descending(column: str) -> tuple[np.ndarray, np.ndarray]:
        """Sort keys, minor first: the value negated, then whether it is missing."""
        values = scored[column].to_numpy(float)
        missing = np.isnan(values)
        return np.where(missing, 0.0, -values), missing

    # np.lexsort is stable, so equals keep the key order. The rows stay where they are:
    # reordering a million rows of text costs more than the writer's ORDER BY value_rank.
    order = np.lexsort((*descending("value_score"), *descending("clv_12m")))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(1, len(order) + 1)
    scored["value_rank"] = rank
    return scored
