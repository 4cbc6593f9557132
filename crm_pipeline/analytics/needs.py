"""Needs: importance-performance analysis (Martilla & James 1977) and the seed's need score.

Each need dimension is placed by its mean importance and mean satisfaction (performance)
against crosshairs, by default the means over all dimensions of the group (data-centred, as
is usual when every dimension matters somewhat), or a fixed point such as the scale midpoint:

    high importance, low satisfaction   Concentrate here
    high importance, high satisfaction  Keep up the good work
    low importance, low satisfaction    Low priority
    low importance, high satisfaction   Possible overkill

A value on a crosshair counts as high. gap = importance - satisfaction.
"""

from __future__ import annotations

import pandas as pd

QUADRANTS = ("Concentrate here", "Keep up the good work", "Low priority", "Possible overkill")


def quadrant(importance: float, satisfaction: float, cross_i: float, cross_s: float) -> str:
    high_i, high_s = importance >= cross_i, satisfaction >= cross_s
    if high_i:
        return "Keep up the good work" if high_s else "Concentrate here"
    return "Possible overkill" if high_s else "Low priority"


def ipa(
    answers: pd.DataFrame,
    by: list[str] | None = None,
    crosshairs: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Importance-performance per dimension (and per group in `by`).

    answers: one row per response and dimension with importance and satisfaction (1-5;
    missing answers ignored). Returns per group and dimension: responses, mean importance,
    mean satisfaction, gap and quadrant.
    """
    keys = [*(by or []), "dimension"]
    table = (
        answers.groupby(keys, dropna=False)
        .agg(
            responses=("satisfaction", "count"),
            importance=("importance", "mean"),
            satisfaction=("satisfaction", "mean"),
        )
        .reset_index()
    )
    table["gap"] = table["importance"] - table["satisfaction"]
    if crosshairs is None:
        groups = table.groupby(by, dropna=False) if by else None
        cross_i = groups["importance"].transform("mean") if by else table["importance"].mean()
        cross_s = groups["satisfaction"].transform("mean") if by else table["satisfaction"].mean()
    else:
        cross_i, cross_s = crosshairs
    table["quadrant"] = [
        quadrant(i, s, ci, cs)
        for i, s, ci, cs in zip(
            table["importance"],
            table["satisfaction"],
            pd.Series(cross_i, index=table.index),
            pd.Series(cross_s, index=table.index),
            strict=True,
        )
    ]
    return table


def need_scores(answers: pd.DataFrame) -> pd.DataFrame:
    """The seed's need_score = need_satisfaction x need_importance per customer and dimension
    (each 1-5, so 1-25), from the customer's mean answers; scaled 0-100 as 100 x (score - 1) / 24."""
    per = (
        answers.dropna(subset=["customer_key"])
        .groupby(["customer_key", "dimension"])
        .agg(importance=("importance", "mean"), satisfaction=("satisfaction", "mean"))
        .reset_index()
    )
    per["need_score"] = per["importance"] * per["satisfaction"]
    per["need_score_100"] = (per["need_score"] - 1) / 24 * 100
    return per
