"""Satisfaction: the standard measures (CSAT, NPS, complaint rate) and the seed's
satisfaction_score = satisfaction_rating x feedback_score x complaint_score.

Components, each scaled to 0-1 before multiplying (so the product is 0-1, then x100):
- satisfaction_rating: the customer's mean overall rating, (rating - 1) / 4;
- feedback_score: the customer's mean likelihood to recommend, nps / 10;
- complaint_score: 1 / (1 + complaints), complaints being inquiries with topic complaint.
A customer who never answered a survey gets the population's mean rating and mean NPS (the
documented default), so silence is neither rewarded nor punished.
"""

from __future__ import annotations

import pandas as pd


def csat(ratings: pd.Series) -> float:
    """Share of ratings that are 4 or 5, in percent (NaN when no ratings)."""
    answered = ratings.dropna()
    return float((answered >= 4).mean() * 100) if len(answered) else float("nan")


def nps(scores: pd.Series) -> float:
    """Net promoter score: % promoters (9-10) minus % detractors (0-6)."""
    answered = scores.dropna()
    if not len(answered):
        return float("nan")
    return float(((answered >= 9).mean() - (answered <= 6).mean()) * 100)


def complaint_rate(topics: pd.Series) -> float:
    """Share of inquiries that are complaints, in percent."""
    return float((topics == "complaint").mean() * 100) if len(topics) else float("nan")


def satisfaction_scores(
    customers: pd.Index, feedback: pd.DataFrame, inquiries: pd.DataFrame
) -> pd.DataFrame:
    """Per customer: the three components (0-1) and satisfaction_score (0-100).

    feedback: customer_key, satisfaction_rating, nps; inquiries: customer_key, topic.
    """
    answered = feedback.dropna(subset=["customer_key"]).groupby("customer_key")
    rating = answered["satisfaction_rating"].mean().reindex(customers)
    recommend = answered["nps"].mean().reindex(customers)
    rating = rating.fillna(feedback["satisfaction_rating"].mean())
    recommend = recommend.fillna(feedback["nps"].mean())
    complaints = (
        inquiries[inquiries["topic"] == "complaint"]
        .groupby("customer_key")
        .size()
        .reindex(customers, fill_value=0)
    )
    out = pd.DataFrame(
        {
            "satisfaction_rating_component": (rating - 1) / 4,
            "feedback_score_component": recommend / 10,
            "complaint_score_component": 1 / (1 + complaints),
        },
        index=customers,
    )
    out["satisfaction_score"] = (
        out["satisfaction_rating_component"]
        * out["feedback_score_component"]
        * out["complaint_score_component"]
        * 100
    )
    return out
