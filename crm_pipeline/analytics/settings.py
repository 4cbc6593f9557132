"""Settings of the customer analysis, bound once for every analytics asset."""

from __future__ import annotations

from datetime import date

import dagster as dg
from pydantic import Field

from crm_pipeline.core.classify import parse_day


class AnalysisSettings(dg.ConfigurableResource):
    """The day scores are computed as of, and the CLV horizon and discount rate."""

    as_of: str = Field(
        default="", description="Day (YYYY-MM-DD) to score as of; empty: the last day with orders."
    )
    clv_months: int = Field(default=12, description="CLV horizon in months.")
    discount_rate: float = Field(default=0.10, description="Yearly discount rate of the CLV.")

    def as_of_date(self) -> date | None:
        """The configured as-of day, or None for the last day with orders."""
        return parse_day(self.as_of, "analysis.as_of")
