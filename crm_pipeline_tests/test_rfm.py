"""RFM on hand-made customers: quintile scores point the right way and the segment map puts
every (recency, frequency) pair in exactly one of the ten named segments."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_pipeline.analytics.rfm import SEGMENT_MAP, SEGMENTS, quintile, rfm_scores, segment

# The usual RFM grid, recency 5 (top row) to 1, frequency 1 (left) to 5.
GRID = """
New        Potential  Potential  Champions  Champions
Promising  Potential  Potential  Loyal      Loyal
Sleep      Sleep      Attention  Loyal      Loyal
Hibernate  Hibernate  Risk       Risk       CantLose
Hibernate  Hibernate  Risk       Risk       CantLose
"""
SHORT = {
    "Potential": "Potential Loyalists",
    "Sleep": "About to Sleep",
    "Attention": "Need Attention",
    "Hibernate": "Hibernating",
    "Risk": "At Risk",
    "CantLose": "Can't Lose",
}


def test_the_segment_map_covers_every_score_pair_with_the_ten_segments() -> None:
    expected = {
        (5 - row, f + 1): SHORT.get(name, name)
        for row, line in enumerate(GRID.strip().splitlines())
        for f, name in enumerate(line.split())
    }
    assert SEGMENT_MAP == expected
    assert set(SEGMENT_MAP.values()) == set(SEGMENTS) and len(SEGMENTS) == 10


@pytest.mark.parametrize(
    ("r", "f", "name"),
    [
        (5, 5, "Champions"),
        (4, 4, "Loyal"),
        (3, 5, "Loyal"),
        (5, 2, "Potential Loyalists"),
        (4, 3, "Potential Loyalists"),
        (5, 1, "New"),
        (4, 1, "Promising"),
        (3, 3, "Need Attention"),
        (3, 1, "About to Sleep"),
        (2, 3, "At Risk"),
        (1, 5, "Can't Lose"),
        (1, 1, "Hibernating"),
    ],
)
def test_a_score_pair_falls_in_its_named_segment(r: int, f: int, name: str) -> None:
    assert segment(r, f) == name


def test_scores_outside_one_to_five_are_refused() -> None:
    with pytest.raises(ValueError, match="recency 0"):
        segment(0, 3)


def test_quintiles_give_each_fifth_one_score_best_is_five() -> None:
    values = pd.Series(range(100))
    scores = quintile(values)
    assert scores.value_counts().to_dict() == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    assert scores[99] == 5 and scores[0] == 1
    assert quintile(values, higher_is_better=False)[0] == 5


def test_tied_customers_share_the_score_of_their_middle_rank() -> None:
    # Every customer bought on the day: none is lapsed.
    assert set(quintile(pd.Series([0, 0, 0]), higher_is_better=False)) == {3}
    # Six of ten share the best value, four the worst; three apart score low, middle, high.
    assert quintile(pd.Series([9] * 6 + [1] * 4)).tolist() == [5] * 6 + [1] * 4
    assert quintile(pd.Series([3, 2, 1])).tolist() == [5, 3, 1]
    assert quintile(pd.Series([2, 1])).tolist() == [5, 1]
    # Most buyers bought once: they score 1, and a tie in between its middle rank.
    frequency = pd.Series([1] * 60 + [2] * 20 + list(range(3, 23)))
    scores = quintile(frequency)
    assert set(scores[:60]) == {1} and set(scores[60:80]) == {4} and scores.iloc[-1] == 5


def test_recent_frequent_big_spenders_are_champions_and_long_gone_ones_hibernate() -> None:
    customers = pd.DataFrame(
        {
            "recency_days": [1, 2, 3, 4, 5, 300, 310, 320, 330, 340],
            "frequency": [20, 19, 18, 17, 16, 1, 1, 1, 1, 1],
            "monetary": [900, 800, 700, 600, 500, 10, 9, 8, 7, 6],
        },
        index=[f"C{i}" for i in range(10)],
    )
    scored = rfm_scores(customers)
    assert scored.loc["C0", "rfm_segment"] == "Champions"
    assert scored.loc["C0", "rfm_cell"] == "555"
    assert scored.loc["C9", "rfm_segment"] == "Hibernating"
    assert scored["rfm_segment"].notna().all()
