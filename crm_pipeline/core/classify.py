"""Classification and exclusion rules of the core model, with their thresholds in one place.

The rules are SQL expressions built from plain settings held by one resource (core_rules), so
every core table applies the same exclusions; an operator changes a threshold in the resource
config and the documented category values stay the same.
"""

from __future__ import annotations

from datetime import date

import dagster as dg
from pydantic import Field, field_validator

LIFECYCLE_STAGES = ("new", "active", "lapsing", "lapsed", "prospect")
CHANNEL_PREFERENCES = ("online", "store", "omnichannel", "none")
PRICE_BANDS = ("budget", "mid", "premium")
SIZE_BANDS = ("small", "medium", "large")


def parse_day(value: str, setting: str) -> date | None:
    """A YYYY-MM-DD setting as a date (None when empty), or an error naming the setting."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as err:
        raise ValueError(
            f"{setting} is {value!r}: give a day as YYYY-MM-DD, or leave it empty for the last "
            "day with events"
        ) from err


def day_setting(value: object, setting: str) -> object:
    """A day setting as given, refused when it is text but no YYYY-MM-DD day: when it is set,
    not when a step reads it. One bound to an environment variable (dg.EnvVar, its name until
    a run reads it) is checked when the run builds the resource with its value; one of another
    type is left to the field's own type check."""
    if isinstance(value, str) and not isinstance(value, dg.EnvVar):
        parse_day(value, setting)
    return value


class CoreRules(dg.ConfigurableResource):
    """Rules of the core model, bound once for every core asset: what is left out, and where
    categories split."""

    as_of: str = Field(
        default="",
        description="Day (YYYY-MM-DD) categories are computed as of; empty: the last event day.",
    )
    new_days: int = Field(default=90, description="First purchase within this many days: new.")
    active_days: int = Field(default=180, description="Last purchase within this: active.")
    lapsing_days: int = Field(default=365, description="Last purchase within this: lapsing.")
    omnichannel_share: float = Field(
        default=0.2, description="Share of purchases in the other channel that makes omnichannel."
    )
    excluded_statuses: list[str] = Field(
        default=["cancelled"], description="Order statuses left out of order lines."
    )
    refund_statuses: list[str] = Field(
        default=["refunded"],
        description="Order statuses of an order refunded or returned, besides 'refunded' "
        "itself (always a refund): its lines are kept with order_status 'refunded', their "
        "amount as refund_amount and no net sales or margin, and it is never counted as a "
        "purchase.",
    )
    test_account_domains: list[str] = Field(
        default=["example.com", "example.org", "test.com"],
        description="Email domains of test accounts, left out with everything they did.",
    )
    staff_email_domains: list[str] = Field(
        default=[], description="Email domains of staff, left out like test accounts."
    )

    @field_validator("as_of", mode="before")
    @classmethod
    def _a_day(cls, value: object) -> object:
        return day_setting(value, "core_rules.as_of")

    def as_of_date(self) -> date | None:
        """The configured as-of day, or None for the last day with events."""
        return parse_day(self.as_of, "core_rules.as_of")


def lifecycle_sql(config: CoreRules, first: str, last: str, as_of: str) -> str:
    """new: first purchase within new_days of as_of; active: last purchase within active_days;
    lapsing: within lapsing_days; lapsed: longer ago; prospect: never bought."""
    return f"""
        CASE
            WHEN {last} IS NULL THEN 'prospect'
            WHEN {first} > {as_of} - INTERVAL {int(config.new_days)} DAY THEN 'new'
            WHEN {last} > {as_of} - INTERVAL {int(config.active_days)} DAY THEN 'active'
            WHEN {last} > {as_of} - INTERVAL {int(config.lapsing_days)} DAY THEN 'lapsing'
            ELSE 'lapsed'
        END"""


def channel_preference_sql(config: CoreRules, online: str, store: str) -> str:
    """online or store when the other channel has under omnichannel_share of the purchases;
    omnichannel otherwise; none without purchases."""
    share = float(config.omnichannel_share)
    return f"""
        CASE
            WHEN coalesce({online}, 0) + coalesce({store}, 0) = 0 THEN 'none'
            WHEN {store} < {share} * ({online} + {store}) THEN 'online'
            WHEN {online} < {share} * ({online} + {store}) THEN 'store'
            ELSE 'omnichannel'
        END"""
