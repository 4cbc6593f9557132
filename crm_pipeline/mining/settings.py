"""Settings of opportunity mining, bound once for every mining asset."""

import dagster as dg
from pydantic import Field


class MiningSettings(dg.ConfigurableResource):
    """Rule thresholds, recommendation length, the holdout, and the opportunity lists."""

    min_support: float = Field(
        default=0.0001,
        gt=0,
        le=1,
        description="Least share of baskets holding both sides of a rule (and each item alone).",
    )
    min_baskets: int = Field(
        default=5, ge=1, description="Least baskets holding both sides of a rule."
    )
    min_confidence: float = Field(
        default=0.02, ge=0, le=1, description="Least P(consequent | antecedent) of a rule."
    )
    min_lift: float = Field(
        default=1.0, ge=0, description="Least lift of a rule (1: no better than chance)."
    )
    recommendations: int = Field(
        default=10, ge=1, le=100, description="Products recommended per customer."
    )
    holdout_days: int = Field(
        default=90,
        gt=0,
        description="Days before the as-of day held out to evaluate the recommender.",
    )
    refit_days: int = Field(
        default=7,
        ge=0,
        description="Days mined rules, and the recommender's holdout evaluation, serve: a run "
        "up to this many days after rules mined with the same thresholds on the same history "
        "recommends with them, and one after an evaluation of as many recommendations with "
        "the same holdout reports it instead of evaluating again. 0: both on every run.",
    )
    conversion_days: int = Field(
        default=14,
        ge=0,
        description="Days after an inquiry within which an order by the customer converts it.",
    )
    whitespace_ratio: float = Field(
        default=0.7,
        gt=0,
        lt=1,
        description="A segment is whitespace for a category when its penetration is below this "
        "share of comparable segments' penetration.",
    )
    min_segment_buyers: int = Field(
        default=30,
        ge=1,
        description="Segments with fewer buyers in the last year are not judged for whitespace.",
    )
    opportunities_per_type: int = Field(
        default=1000, ge=1, description="Ranked opportunities kept per type."
    )
