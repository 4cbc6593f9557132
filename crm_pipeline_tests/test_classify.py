"""Classification rules on hand-made rows: lifecycle stage and channel preference follow their
configured windows and shares."""

from __future__ import annotations

import duckdb
import pytest

from crm_pipeline.core.classify import CoreRules, channel_preference_sql, lifecycle_sql

AS_OF = "DATE '2025-12-31'"


def _lifecycle(config: CoreRules, first: str | None, last: str | None) -> str:
    sql = lifecycle_sql(config, "f", "l", AS_OF)
    return duckdb.sql(
        f"SELECT {sql} FROM (SELECT CAST(? AS DATE) AS f, CAST(? AS DATE) AS l)",
        params=[first, last],
    ).fetchall()[0][0]


@pytest.mark.parametrize(
    ("first", "last", "stage"),
    [
        ("2025-11-01", "2025-12-01", "new"),
        ("2024-01-01", "2025-10-01", "active"),
        ("2024-01-01", "2025-03-01", "lapsing"),
        ("2023-01-01", "2024-06-01", "lapsed"),
        (None, None, "prospect"),
    ],
)
def test_lifecycle_stage_follows_the_default_windows(first, last, stage) -> None:
    assert _lifecycle(CoreRules(), first, last) == stage


def test_lifecycle_windows_are_configurable() -> None:
    assert _lifecycle(CoreRules(active_days=30), "2024-01-01", "2025-10-01") == "lapsing"
    assert _lifecycle(CoreRules(new_days=10), "2025-11-01", "2025-12-01") == "active"


@pytest.mark.parametrize(
    ("online", "store", "preference"),
    [(10, 0, "online"), (9, 1, "online"), (7, 3, "omnichannel"), (1, 9, "store"), (0, 0, "none")],
)
def test_channel_preference_by_share_of_purchases(online, store, preference) -> None:
    sql = channel_preference_sql(CoreRules(), "o", "s")
    got = duckdb.sql(f"SELECT {sql} FROM (SELECT {online} AS o, {store} AS s)").fetchall()[0][0]
    assert got == preference
