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


def nps_group(score: float) -> str | None:
    """promoter (9-10), passive (7-8) or detractor (0-6)."""
    if pd.isna(score):
        return None
    return "promoter" if score >= 9 else "passive" if score >= 7 else "detractor"


def customer_measures(
    customers: pd.Index, feedback: pd.DataFrame, inquiries: pd.DataFrame
) -> pd.DataFrame:
    """Per customer, the standard measures of their own answers and contacts: surveys, CSAT
    (% of their ratings 4 or 5), the NPS group of their latest answer, inquiries, complaints,
    complaint rate (%) and median first-response and resolution hours. NULL where they gave
    no answer or made no contact.

    feedback: customer_key, submitted_at, satisfaction_rating, nps; inquiries: customer_key,
    topic, first_response_hours, resolution_hours.
    """
    answered = feedback.dropna(subset=["customer_key"])
    rating = answered["satisfaction_rating"]
    answered = answered.assign(happy=(rating >= 4).where(rating.notna()) * 100.0)
    latest = answered.dropna(subset=["nps"]).sort_values("submitted_at")
    contacts = inquiries.dropna(subset=["customer_key"]).assign(
        complaint=lambda f: f["topic"] == "complaint"
    )
    by_contact = contacts.groupby("customer_key")
    out = pd.DataFrame(
        {
            "surveys": answered.groupby("customer_key").size(),
            "csat": answered.groupby("customer_key")["happy"].mean(),
            "nps_group": latest.groupby("customer_key")["nps"].last().map(nps_group),
            "inquiries": by_contact.size(),
            "complaints": by_contact["complaint"].sum(),
            "complaint_rate": by_contact["complaint"].mean() * 100,
            "median_first_response_hours": by_contact["first_response_hours"].median(),
            "median_resolution_hours": by_contact["resolution_hours"].median(),
        }
    ).reindex(customers)
    for count in ("surveys", "inquiries", "complaints"):
        out[count] = out[count].fillna(0).astype("int64")
    return out


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
