"""Settings of the customer analysis, bound once for every analytics asset."""

from __future__ import annotations

from datetime import date

import dagster as dg
from pydantic import Field, field_validator

from crm_pipeline.analytics.scoring import Minimums
from crm_pipeline.core.classify import day_setting, parse_day


class AnalysisSettings(dg.ConfigurableResource):
    """The day scores are computed as of, the CLV horizon and discount rate, the holdout, and
    how long a CLV fit serves."""

    as_of: str = Field(
        default="", description="Day (YYYY-MM-DD) to score as of; empty: the last day with orders."
    )
    clv_months: int = Field(default=12, description="CLV horizon in months.")
    discount_rate: float = Field(default=0.10, description="Yearly discount rate of the CLV.")
    holdout_days: int = Field(
        default=90,
        gt=0,
        description="Days before the as-of day held out to check BG/NBD's predictions.",
    )

    refit_days: int = Field(
        default=7,
        ge=0,
        description="Days a CLV fit serves: a run scores with the latest BG/NBD and Gamma-Gamma "
        "parameters fitted on the same history at most this many days before its as-of day "
        "(never after it), and fits them again (with the holdout check) when there are none. "
        "0: fit on every run.",
    )

    min_buyers_to_fit: int = Field(
        default=50, ge=1, description="Fewer buyers than this: the CLV models are not fitted."
    )
    min_repeat_buyers_to_fit: int = Field(
        default=20,
        ge=1,
        description="Fewer repeat buyers than this: the CLV models are not fitted.",
    )

    def minimums(self) -> Minimums:
        return Minimums(self.min_buyers_to_fit, self.min_repeat_buyers_to_fit)

    @field_validator("as_of", mode="before")
    @classmethod
    def _a_day(cls, value: object) -> object:
        return day_setting(value, "analysis.as_of")

    def as_of_date(self) -> date | None:
        """The configured as-of day, or None for the last day with orders."""
        return parse_day(self.as_of, "analysis.as_of")
