"""The daily partitions every event source shares: one partition per delivery day."""

from __future__ import annotations

import os

import dagster as dg

# The first delivery day is a deployment setting: partitions exist from it up to yesterday.
FIRST_DAY = os.environ.get("CRM_FIRST_DAY", "2025-01-01")

daily_partitions = dg.DailyPartitionsDefinition(start_date=FIRST_DAY)

# A full load (or a backfill over a range) is one run over all its days, not one run per day.
single_run_backfill = dg.BackfillPolicy.single_run()
