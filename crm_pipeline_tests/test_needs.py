"""Importance-performance analysis and the seed's need score on hand-made survey answers."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from crm_pipeline.analytics.needs import ipa, need_scores
from crm_pipeline.analytics.schemas import ANALYTICS_MODELS
from crm_pipeline.marts import write_frame

ANSWERS = pd.DataFrame(
    [
        # dimension, importance, satisfaction (two responses each)
        ("price", 5, 2),
        ("price", 5, 2),
        ("delivery", 5, 5),
        ("delivery", 4, 5),
        ("ease_of_use", 2, 2),
        ("ease_of_use", 2, 1),
        ("customer_service", 1, 5),
        ("customer_service", 2, 4),
    ],
    columns=["dimension", "importance", "satisfaction"],
)


def test_each_dimension_lands_in_its_quadrant_against_the_mean_crosshairs() -> None:
    table = ipa(ANSWERS).set_index("dimension")
    assert table.loc["price", "quadrant"] == "Concentrate here"
    assert table.loc["delivery", "quadrant"] == "Keep up the good work"
    assert table.loc["ease_of_use", "quadrant"] == "Low priority"
    assert table.loc["customer_service", "quadrant"] == "Possible overkill"
    assert table.loc["price", "gap"] == pytest.approx(3.0)
    assert table.loc["delivery", "responses"] == 2


def test_fixed_crosshairs_at_the_scale_midpoint() -> None:
    table = ipa(ANSWERS, crosshairs=(3.0, 3.0)).set_index("dimension")
    assert table.loc["ease_of_use", "quadrant"] == "Low priority"
    assert table.loc["delivery", "importance"] == pytest.approx(4.5)


def test_quadrants_are_placed_within_each_segment() -> None:
    both = pd.concat([ANSWERS.assign(segment="A"), ANSWERS.assign(segment="B")])
    table = ipa(both, by=["segment"])
    assert len(table) == 8
    assert (table.groupby("dimension")["quadrant"].nunique() == 1).all()


def test_need_score_is_satisfaction_times_importance_per_customer() -> None:
    answers = pd.DataFrame(
        {
            "customer_key": ["C1", "C1", "C2", None],
            "dimension": ["price", "price", "price", "price"],
            "importance": [5, 3, 1, 5],
            "satisfaction": [2, 4, 1, 5],
        }
    )
    scores = need_scores(answers).set_index("customer_key")
    assert scores.loc["C1", "need_score"] == pytest.approx(4 * 3)
    assert scores.loc["C2", "need_score_100"] == pytest.approx(0)
    assert len(scores) == 2  # anonymous answers have no customer to score


def test_a_mart_frame_is_stored_in_its_contract_types_whatever_pandas_guessed() -> None:
    # Whole numbers where a mean is due, a quadrant no answer reached (all NULL): pandas
    # would store BIGINT and a NULL type.
    frame = pd.DataFrame(
        {
            "breakdown": ["overall"],
            "group_value": ["all"],
            "dimension": ["price"],
            "responses": [3],
            "importance": [4],
            "satisfaction": [3],
            "gap": [1],
            "quadrant": [None],
            "as_of": [pd.Timestamp("2025-03-01")],
        }
    )
    conn = duckdb.connect()
    conn.execute("CREATE SCHEMA analytics")
    conn.register("frame", frame)
    write_frame(conn, "analytics.need_ipa", "frame", ANALYTICS_MODELS["need_ipa"])
    types = dict(
        conn.execute(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'need_ipa'"
        ).fetchall()
    )
    assert types == {
        "breakdown": "VARCHAR",
        "group_value": "VARCHAR",
        "dimension": "VARCHAR",
        "responses": "BIGINT",
        "importance": "DOUBLE",
        "satisfaction": "DOUBLE",
        "gap": "DOUBLE",
        "quadrant": "VARCHAR",
        "as_of": "TIMESTAMP",
    }
