"""RFM: recency, frequency and monetary quintile scores, and the ten named segments.

Scores are quintiles over the scored customers, 5 best: recency 5 = bought most recently,
frequency 5 = most orders, monetary 5 = most spent. Tied values share one score, so two
customers with one order each never get different frequency scores; with many ties a quintile
holds more than a fifth. The best value scores 5 and the worst 1 however many share it
(one-time buyers are the lowest frequency, buyers of the as-of day the best recency); a tie
between them scores by its middle rank.

The segment map is the usual one on the recency and frequency scores (rows R, columns F):

    R \\ F   1               2-3                  4-5
    5       New             Potential Loyalists  Champions
    4       Promising       Potential Loyalists  Loyal
    3       About to Sleep  About to Sleep (2),  Loyal
                            Need Attention (3)
    1-2     Hibernating (1-2), At Risk (3-4), Can't Lose (5)

so every (R, F) pair falls in exactly one segment.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential Loyalists",
    "New",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Can't Lose",
    "Hibernating",
)


def segment(r: int, f: int) -> str:
    """The named segment of a recency score and a frequency score (1-5 each)."""
    if not (1 <= r <= 5 and 1 <= f <= 5):
        raise ValueError(f"RFM scores run 1-5; got recency {r}, frequency {f}")
    if r <= 2:
        return "Hibernating" if f <= 2 else "At Risk" if f <= 4 else "Can't Lose"
    if r == 3:
        return "About to Sleep" if f <= 2 else "Need Attention" if f == 3 else "Loyal"
    if f >= 4:
        return "Champions" if r == 5 else "Loyal"
    if f >= 2:
        return "Potential Loyalists"
    return "New" if r == 5 else "Promising"


SEGMENT_MAP = {(r, f): segment(r, f) for r in range(1, 6) for f in range(1, 6)}


def quintile(values: pd.Series, higher_is_better: bool = True) -> pd.Series:
    """Scores 1-5 by quintile of rank (5 = best fifth): the best value 5 and the worst 1,
    however many share them; other tied values the score of their middle rank (the i-th of n
    at (i - 0.5) / n). Every value alike: 3 for all."""
    if values.empty:
        return pd.Series(dtype="int64", index=values.index)
    ranks = values.rank(method="average", ascending=higher_is_better)
    scores = np.ceil((ranks - 0.5) / len(values) * 5).clip(1, 5)
    if values.nunique() > 1:
        best, worst = (
            (values.max(), values.min()) if higher_is_better else (values.min(), values.max())
        )
        scores = scores.mask(values.eq(best), 5).mask(values.eq(worst), 1)
    return scores.astype("int64")


def rfm_scores(
    customers: pd.DataFrame,
) -> pd.DataFrame:
    """RFM scores and segment for customers with at least one purchase.

    customers: recency_days (days since last purchase, as of the scoring date), frequency
    (orders), monetary (net spend). Returns r_score, f_score, m_score, rfm_cell ('543') and
    rfm_segment, on the same index.
    """
    r = quintile(customers["recency_days"], higher_is_better=False)
    f = quintile(customers["frequency"])
    m = quintile(customers["monetary"])
    return pd.DataFrame(
        {
            "r_score": r,
            "f_score": f,
            "m_score": m,
            "rfm_cell": r.astype(str) + f.astype(str) + m.astype(str),
            "rfm_segment": [SEGMENT_MAP[pair] for pair in zip(r, f, strict=True)],
        },
        index=customers.index,
    )
