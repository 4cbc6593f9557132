"""The Gamma-Gamma model of spend (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value
curves"; Fader & Hardie, "The Gamma-Gamma model of monetary value"): each transaction's value is
Gamma(p, nu) with nu ~ Gamma(q, gamma) across customers, independent of the purchase process.
Per repeat customer it needs x (> 0) and m_x, the mean value of the x repeat transactions;
gamma is in money units. Fitted by maximum likelihood over the log-parameters from all ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln

from crm_pipeline.analytics.fitting import Distinct, FloatArray, maximise


@dataclass(frozen=True)
class GammaGammaFit:
    p: float
    q: float
    gamma: float
    log_likelihood: float
    n: int
    converged: bool


def _spenders(x: ArrayLike, m_x: ArrayLike) -> tuple[FloatArray, FloatArray]:
    x_, m_ = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(m_x, dtype=np.float64))
    bad = ~(x_ > 0) | ~(m_ > 0)
    if bad.any():
        first = int(np.flatnonzero(bad.ravel())[0])
        raise ValueError(
            f"Gamma-Gamma is fitted on repeat customers with positive mean spend; "
            f"{int(bad.sum())} row(s) have x <= 0 or m_x <= 0, the first at position {first} "
            f"(x={x_.ravel()[first]}, m_x={m_.ravel()[first]}): keep only x > 0 and m_x > 0"
        )
    return x_, m_


@dataclass(frozen=True)
class _Spend:
    """Repeat customers' (x, m_x) with the parts of the Gamma-Gamma density that do not depend
    on the parameters computed once."""

    x: Distinct
    log_m: FloatArray
    x_log_m: FloatArray
    spent: FloatArray  # x m_x

    @classmethod
    def of(cls, x: FloatArray, m_x: FloatArray) -> _Spend:
        log_m = np.log(m_x)
        return cls(Distinct.of(x), log_m, x * log_m, x * m_x)


def _gamma_gamma_terms(p: float, q: float, gamma: float, spend: _Spend) -> FloatArray:
    xs = spend.x.values
    px = p * xs
    per_x = gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(gamma) + px * np.log(xs)
    return (
        spend.x.per_row(per_x)
        + p * spend.x_log_m
        - spend.log_m
        - spend.x.per_row(px + q) * np.log(gamma + spend.spent)
    )


def gamma_gamma_log_likelihood(
    p: float, q: float, gamma: float, x: ArrayLike, m_x: ArrayLike
) -> FloatArray:
    """Log-density of each repeat customer's mean spend m_x given x under Gamma-Gamma.

    f(m_x | x) = G(px+q) / (G(px) G(q)) * gamma^q m_x^(px-1) x^(px) / (gamma + x m_x)^(px+q).
    """
    x, m_x = _spenders(x, m_x)
    return _gamma_gamma_terms(p, q, gamma, _Spend.of(x.ravel(), m_x.ravel())).reshape(x.shape)


def fit_gamma_gamma(x: ArrayLike, m_x: ArrayLike) -> GammaGammaFit:
    """Gamma-Gamma parameters maximising the summed log-likelihood of the repeat customers."""
    x, m_x = (v.ravel() for v in _spenders(x, m_x))
    n = x.size
    if n == 0:
        raise ValueError("fit_gamma_gamma needs at least one repeat customer; got empty arrays")
    spend = _Spend.of(x, m_x)

    def objective(log_params: FloatArray) -> float:
        value = -_gamma_gamma_terms(*np.exp(log_params), spend).sum() / n
        return float(value) if np.isfinite(value) else np.inf

    log_params, converged = maximise(objective, np.zeros(3))
    p, q, gamma = (float(v) for v in np.exp(log_params))
    total = float(_gamma_gamma_terms(p, q, gamma, spend).sum())
    return GammaGammaFit(p, q, gamma, total, n, converged)


def expected_average_value(fit: GammaGammaFit, x: ArrayLike, m_x: ArrayLike) -> FloatArray:
    """Expected value of a customer's future transactions, E[Z | x, m_x].

    p (gamma + x m_x) / (p x + q - 1): a weighted mean of the population mean p gamma/(q-1)
    and the customer's own m_x, leaning on m_x as x grows. For x = 0 it is the population
    mean (m_x is then ignored and may be NaN). Needs q > 1 for the mean to exist.
    """
    if fit.q <= 1:
        raise ValueError(f"Gamma-Gamma mean spend is infinite for q <= 1; the fit has q={fit.q}")
    x_, m_ = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(m_x, dtype=np.float64))
    if (x_ < 0).any():
        raise ValueError("expected_average_value: x (repeat purchases) must be >= 0")
    spent = np.where(x_ > 0, x_ * m_, 0.0)
    return fit.p * (fit.gamma + spent) / (fit.p * x_ + fit.q - 1)


PLAUSIBLE_MARGIN = 10.0


def implausible(fit: GammaGammaFit, m_x: ArrayLike) -> str | None:
    """Why a fit is not one to score with, or None. A few repeat customers (a month of history)
    can send the maximisation off to parameters whose mean spend p gamma / (q - 1) is far
    outside every mean spend observed (1e20 with q near 1e19): every CLV would be that too."""
    if not fit.q > 1:
        return f"q = {fit.q:.3g}, so the mean spend it implies is infinite"
    mean = fit.p * fit.gamma / (fit.q - 1)
    low, high = float(np.min(m_x)), float(np.max(m_x))
    # A tenfold margin: a fit may rightly put the mean a little off the observed spends (all
    # alike, say); a runaway one is off by many orders of magnitude.
    if not low / PLAUSIBLE_MARGIN <= mean <= high * PLAUSIBLE_MARGIN:
        return (
            f"the mean spend it implies, {mean:.3g}, is far outside the repeat customers' "
            f"mean spends ({low:,.2f} to {high:,.2f})"
        )
    return None
