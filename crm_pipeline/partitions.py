"""The daily partitions every event source shares: one partition per delivery day."""

from __future__ import annotations

import os

import dagster as dg

from crm_pipeline import SettingError, iso_day


def first_day(text: str) -> str:
    """CRM_FIRST_DAY's value, checked: a day as YYYY-MM-DD."""
    try:
        return iso_day(text)
    except ValueError:
        raise SettingError(
            f"CRM_FIRST_DAY={text!r} is not a day as YYYY-MM-DD: set it to the first delivery "
            "day, such as 2025-01-01, or unset it."
        ) from None


# The first delivery day is a deployment setting: partitions exist from it up to yesterday.
FIRST_DAY = first_day(os.environ.get("CRM_FIRST_DAY", "2025-01-01"))

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY)

# A full load (or a backfill over a range) is one run over all its days, not one run per day.
single_run_backfill = dg.BackfillPolicy.single_run()
