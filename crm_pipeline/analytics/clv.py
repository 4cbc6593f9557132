"""Customer lifetime value: BG/NBD purchase counts, Gamma-Gamma spend, and their discounted sum.

BG/NBD (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while alive a
customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha); after each purchase
they drop out with probability p ~ Beta(a, b). Per customer the model needs
    x    repeat purchases (all purchases but the first),
    t_x  time of the last purchase, counted from the first (0 when x = 0),
    T    age: time from the first purchase to the end of the observation period,
all in one time unit of the caller's choosing (the CDNOW paper uses weeks). Parameters in
alpha are in that unit (alpha scales time); r, a and b have no unit.

The spend per transaction comes from the Gamma-Gamma model (`gamma_gamma.py`). BG/NBD is
fitted by maximum likelihood over the log-parameters, starting from all ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import betaln, expit, gammaln, hyp2f1

from crm_pipeline.analytics.fitting import Distinct, FloatArray, distinct_rows, maximise
from crm_pipeline.analytics.gamma_gamma import GammaGammaFit, expected_average_value

WEEKS_PER_MONTH = 365.25 / 12 / 7
DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class BgNbdFit:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n: int
    converged: bool


# A parameter past this is one the maximisation ran off with. On eight days of history (150
# buyers) r, alpha, a and b all went to about 1e7: a model in which every customer buys alike
# and drops out after about half of their purchases, so one who bought twice, the last time
# today, was given P(alive) 0.44 and a one-time buyer 1.0. (a and b near 0, as six weeks of
# history give, is a model's own limit: customers who drop at once or never; it holds every
# repeat buyer alive, which is what such a history shows.)
EXTREME_PARAMETER = 1e6


def bgnbd_implausible(fit: BgNbdFit) -> str | None:
    """Why a BG/NBD fit is not one to score with, or None."""
    parameters = {"r": fit.r, "alpha": fit.alpha, "a": fit.a, "b": fit.b}
    extreme = {name: value for name, value in parameters.items() if value > EXTREME_PARAMETER}
    if not extreme:
        return None
    shown = ", ".join(f"{name} = {value:.3g}" for name, value in extreme.items())
    return (
        f"its parameters ran to extremes ({shown}): the history is too short to tell the "
        "customers' purchase and drop-out rates apart"
    )


def _customers(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[FloatArray, ...]:
    x_, t_x_, T_ = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, t_x, T)))
    checks = {
        "x (repeat purchases) must be a whole number >= 0": (x_ < 0) | (x_ != np.floor(x_)),
        "t_x (recency) must lie in [0, T]": (t_x_ < 0) | (t_x_ > T_),
        "T (age) must be > 0": ~(T_ > 0),
    }
    for message, bad in checks.items():
        if bad.any():
            first = int(np.flatnonzero(bad.ravel())[0])
            raise ValueError(
                f"{message}; {int(bad.sum())} customer(s) break it, the first at position "
                f"{first} (x={x_.ravel()[first]}, t_x={t_x_.ravel()[first]}, "
                f"T={T_.ravel()[first]}): check how the summary was built"
            )
    return x_, t_x_, T_


def _bgnbd_terms(
    r: float, alpha: float, a: float, b: float, x: Distinct, t_x: Distinct, T: Distinct
) -> FloatArray:
    xs = x.values
    common = gammaln(r + xs) - gammaln(r) + r * np.log(alpha) - betaln(a, b)
    # The second term is the chance of dropping out right after the last purchase; it exists
    # only for x > 0 (b + x - 1 would be negative for x = 0 and b < 1).
    repeat = xs > 0
    x1 = np.where(repeat, xs, 1.0)
    rx, rx1 = x.per_row(r + xs), x.per_row(r + x1)
    still_alive = x.per_row(betaln(a, b + xs)) - rx * T.per_row(np.log(alpha + T.values))
    dropped = x.per_row(betaln(a + 1, b + x1 - 1)) - rx1 * t_x.per_row(np.log(alpha + t_x.values))
    return x.per_row(common) + np.where(
        x.per_row(repeat), np.logaddexp(still_alive, dropped), still_alive
    )


def bgnbd_log_likelihood(
    r: float, alpha: float, a: float, b: float, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """Log-likelihood of each customer's (x, t_x, T) under BG/NBD (the paper's eq. 6).

    L = B(a, b+x)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+T)^(r+x))
        + [x > 0] B(a+1, b+x-1)/B(a, b) * G(r+x) alpha^r / (G(r) (alpha+t_x)^(r+x)),
    summed in log space so that large x or T neither overflows nor underflows.
    """
    x, t_x, T = _customers(x, t_x, T)
    terms = _bgnbd_terms(r, alpha, a, b, *(Distinct.of(v.ravel()) for v in (x, t_x, T)))
    return terms.reshape(x.shape)


def fit_bgnbd(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, start: BgNbdFit | None = None
) -> BgNbdFit:
    """BG/NBD parameters maximising the summed log-likelihood of the customers (from the
    parameters of `start` when given, e.g. a fit on similar data; else from all ones)."""
    x, t_x, T = (v.ravel() for v in _customers(x, t_x, T))
    n = x.size
    if n == 0:
        raise ValueError("fit_bgnbd needs at least one customer; got empty arrays")
    # Customers with the same (x, t_x, T) add the same term: summing each distinct summary
    # once, weighted by how many customers share it, is the same likelihood at a fraction of
    # the cost (with purchase days as the clock, a million customers have far fewer summaries).
    summaries, row = distinct_rows(x, t_x, T)
    columns = [Distinct.of(c) for c in summaries.T]
    weights = np.bincount(row).astype(np.float64)

    def objective(log_params: FloatArray) -> float:
        value = -(_bgnbd_terms(*np.exp(log_params), *columns) @ weights) / n
        return float(value) if np.isfinite(value) else np.inf

    initial = np.log([start.r, start.alpha, start.a, start.b]) if start else np.zeros(4)
    log_params, converged = maximise(objective, initial)
    r, alpha, a, b = (float(v) for v in np.exp(log_params))
    total = float(_bgnbd_terms(r, alpha, a, b, *columns) @ weights)
    return BgNbdFit(r, alpha, a, b, total, n, converged)


def p_alive(fit: BgNbdFit, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
    """P(still alive at T | x, t_x, T) under BG/NBD.

    1 / (1 + [x > 0] a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)). In this model a customer can
    only drop out right after a purchase, so one with no repeat purchases is alive for sure
    (P = 1 whatever T is); with x > 0 the probability falls as T grows past t_x.
    """
    x, t_x, T = _customers(x, t_x, T)
    repeat = x > 0
    x1 = np.where(repeat, x, 1.0)
    log_odds_dead = (
        np.log(fit.a)
        - np.log(fit.b + x1 - 1)
        + (fit.r + x1) * (np.log(fit.alpha + T) - np.log(fit.alpha + t_x))
    )
    return np.where(repeat, expit(-log_odds_dead), 1.0)


def expected_purchases(
    fit: BgNbdFit, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """Expected purchases in the next t time units given (x, t_x, T) (the paper's eq. 10).

    E[Y(t)] = P(alive) * (a+b+x-1)/(a-1)
              * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t))].
    """
    x, t_x, T = _customers(x, t_x, T)
    t = np.asarray(t, dtype=np.float64)
    if (t < 0).any():
        raise ValueError("expected_purchases: the horizon t must be >= 0")
    x, t_x, T, t = np.broadcast_arrays(x, t_x, T, t)
    r, alpha, b = fit.r, fit.alpha, fit.b
    # a = 1, and a + b = 1 at x = 0, are removable singularities (0/0) of the closed form; the
    # expectation is smooth through them, so step off them.
    a = fit.a if abs(fit.a - 1) > 1e-7 else 1 + 1e-7
    b = b if abs(a + b - 1) > 1e-7 else 1 - a + 1e-7
    c = a + b + x - 1
    z = t / (alpha + T + t)
    alive = p_alive(fit, x, t_x, T)
    expected = c / (a - 1) * _bracket(r, a, b, c, z) * alive
    # Dropping out only removes purchases, so the expectation lies between 0 and what an
    # immortal customer would make; outside that the 2F1 evaluation has failed.
    ceiling = alive * (r + x) * t / (alpha + T)
    wrong = ~((expected >= -1e-12) & (expected <= ceiling * (1 + 1e-9) + 1e-12))
    if wrong.any():
        first = int(np.flatnonzero(wrong.ravel())[0])
        raise ValueError(
            f"expected_purchases could not evaluate customer position {first} (x={x.flat[first]}, "
            f"T={T.flat[first]}, t={t.flat[first]}) with r={r}, alpha={alpha}, a={fit.a}, b={fit.b}: "
            "the fitted parameters are extreme; check the fit and the summary's time unit"
        )
    return expected


def _bracket(r: float, a: float, b: float, c: FloatArray, z: FloatArray) -> FloatArray:
    """1 - (1-z)^(r+x) 2F1(r+x, b+x; c; z), with c = a+b+x-1, as 1 - (1-z)^(a-1) F.

    F = 2F1(a+b-1-r, a-1; c; z) by Euler's transformation (DLMF 15.8.1), which avoids a huge
    2F1 times a tiny power. F is summed as its Gauss series with a bound on the tail; scipy's
    2F1 only takes what the series cannot finish. Checked against 40-digit mpmath: scipy alone,
    in either form, returns NaN for heavy buyers and finite wrong values for x = 0 over
    horizons of hundreds of (alpha + T).
    """
    f = _hyp2f1_series(a + b - 1 - r, a - 1, c, z)
    slow = ~np.isfinite(f)
    if slow.any():
        f[slow] = hyp2f1(a + b - 1 - r, a - 1, c[slow], z[slow])
    # F can be negative (small a, x = 0); where it is positive, expm1 keeps short horizons exact.
    log_power = (a - 1) * np.log1p(-z)
    positive = f > 0
    # Parameters gone to extremes overflow here; the fit's plausibility check reports them.
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(
            positive,
            -np.expm1(log_power + np.log(np.where(positive, f, 1.0))),
            1 - np.exp(log_power) * f,
        )


def _hyp2f1_series(
    a: float, b: float, c: FloatArray, z: FloatArray, max_terms: int = 100_000
) -> FloatArray:
    """Gauss series of 2F1(a, b; c; z) for 0 <= z < 1; NaN where it has not converged.

    Stops once the tail is provably below 1e-16 of the sum: from term n on, with every
    factor positive, the term ratio stays below z * max(1, (a+n)/(c+n)) * max(1, (b+n)/(n+1)).
    Finished entries are dropped every few dozen terms, so the slow ones cost the fast nothing.
    """
    c, z = np.broadcast_arrays(np.asarray(c, dtype=np.float64), np.asarray(z, dtype=np.float64))
    result = np.ones(z.shape)
    flat = result.reshape(-1)  # a view: results land in `result`
    todo = np.flatnonzero(z.reshape(-1) > 0)
    cn, zn = c.reshape(-1)[todo], z.reshape(-1)[todo]
    term, total = np.ones(todo.size), np.ones(todo.size)
    n = 0
    # A term that overflows marks its entry broken (below): it goes to scipy's hyp2f1.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while todo.size and n < max_terms:
            for _ in range(32):
                term *= (a + n) * (b + n) / ((cn + n) * (n + 1)) * zn
                total += term
                n += 1
            past_signs = (n + a > 0) & (n + b > 0) & (n + cn > 0)
            ratio = zn * np.maximum(1, (a + n) / (cn + n)) * max(1.0, (b + n) / (n + 1))
            tail = np.abs(term) * ratio / (1 - ratio)
            done = past_signs & (ratio < 1) & (tail <= 1e-16 * np.abs(total))
            broken = ~np.isfinite(total)
            flat[todo[done]] = total[done]
            flat[todo[broken]] = np.nan
            keep = ~(done | broken)
            todo, cn, zn, term, total = todo[keep], cn[keep], zn[keep], term[keep], total[keep]
    flat[todo] = np.nan
    return result


def clv(
    bgnbd: BgNbdFit,
    gg: GammaGammaFit,
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    m_x: ArrayLike,
    *,
    periods_per_month: float,
    months: int = 12,
    discount_rate_yearly: float = 0.10,
) -> FloatArray:
    """Expected discounted value of each customer's purchases over the next `months` months.

    Sum over months i = 1..months of (E[Y(i M)] - E[Y((i-1) M)]) * E[Z | x, m_x] / (1+d)^i,
    where M = periods_per_month is how many of the model's time units (those of t_x, T and
    alpha) make a month: WEEKS_PER_MONTH for a model fitted in weeks, DAYS_PER_MONTH in days.
    d = (1 + discount_rate_yearly)^(1/12) - 1, the monthly rate that compounds to the yearly
    one; each month's value is discounted from its end. The result is in the units of m_x.
    """
    if periods_per_month <= 0 or months < 0 or discount_rate_yearly <= -1:
        raise ValueError(
            f"clv needs periods_per_month > 0, months >= 0 and discount_rate_yearly > -1; got "
            f"{periods_per_month}, {months}, {discount_rate_yearly}"
        )
    x_, t_x_, T_ = _customers(x, t_x, T)
    value = expected_average_value(gg, x_, m_x)
    ends = np.arange(months + 1, dtype=np.float64) * periods_per_month
    # Purchases depend on (x, t_x, T) alone: each distinct summary is projected once.
    summaries, row = distinct_rows(x_.ravel(), t_x_.ravel(), T_.ravel())
    cumulative = np.stack([expected_purchases(bgnbd, end, *summaries.T) for end in ends])
    per_month = np.diff(cumulative, axis=0)
    discount = (1 + discount_rate_yearly) ** (-np.arange(1, months + 1) / 12)
    return np.tensordot(discount, per_month, axes=1)[row].reshape(x_.shape) * value
