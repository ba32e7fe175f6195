"""The no-LM floors by hand: majority label, mean and median rating."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persona_agent.core.records import Item
from persona_agent.evaluation.floors import majority_label, mean_rating, median_rating


def items(*outputs: str) -> list[Item]:
    return [Item(id=f"i{n}", input="x", output=o, order=n) for n, o in enumerate(outputs)]


@pytest.mark.parametrize(
    ("ratings", "median"),
    [
        (("5", "4", "4"), "4"),
        (("1", "4", "5", "5"), "4"),  # middle 4 and 5, mean 3.75: 4 is nearer
        (("4", "5"), "5"),  # middle 4 and 5, mean 4.5: a tie goes to the higher
        (("2", "5", "5", "5", "x"), "5"),  # a non-numeric rating is skipped
        ((), None),
    ],
)
def test_median_rating_by_hand(ratings, median):
    assert median_rating(items(*ratings)) == median


@given(st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=30))
def test_the_median_never_has_more_absolute_error_on_the_past_than_the_mean(ratings):
    values = [float(r) for r in ratings]
    past = items(*(str(r) for r in ratings))

    def error(x: float) -> float:
        return sum(abs(v - x) for v in values)

    assert error(float(median_rating(past))) <= error(float(mean_rating(past))) + 1e-9


def test_majority_and_mean_by_hand():
    assert majority_label(items("sports", "politics", "sports", "politics")) == "politics"  # tie: most recent
    assert mean_rating(items("5", "4", "4")) == "4.333333"
