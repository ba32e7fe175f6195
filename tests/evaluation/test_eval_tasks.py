"""Task definitions: the label sets are exactly LaMP's, and names resolve every way LaMP/OPPU spell them."""

from __future__ import annotations

import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.tasks import LAMP_1, LAMP_2M, LAMP_2N, LAMP_3, LAMP_4, TASKS, MetricKind, get_task
from persona_agent.evaluation.huffpost import CATEGORY_MAP
from persona_agent.evaluation.movielens import TAG_SYNONYMS


def test_label_sets_are_designs():
    assert LAMP_2M.labels == (
        "sci-fi",
        "based on a book",
        "comedy",
        "action",
        "twist ending",
        "dystopia",
        "dark comedy",
        "classic",
        "psychology",
        "fantasy",
        "romance",
        "thought-provoking",
        "social commentary",
        "violence",
        "true story",
    )
    assert LAMP_2N.labels == (
        "women",
        "religion",
        "politics",
        "style & beauty",
        "entertainment",
        "culture & arts",
        "sports",
        "science & technology",
        "travel",
        "business",
        "crime",
        "education",
        "healthy living",
        "parents",
        "food & drink",
    )
    assert LAMP_3.labels == ("1", "2", "3", "4", "5")
    assert LAMP_1.labels == ("[1]", "[2]")
    assert LAMP_4.labels == ()


def test_metric_kinds_and_names():
    assert [t.metric_kind for t in TASKS.values()] == [
        MetricKind.CLASSIFICATION,
        MetricKind.CLASSIFICATION,
        MetricKind.CLASSIFICATION,
        MetricKind.REGRESSION,
        MetricKind.GENERATION,
    ]
    assert LAMP_3.metric_names == ("MAE", "RMSE")
    assert LAMP_4.metric_names == ("rouge-1", "rouge-L")


@pytest.mark.parametrize("name", ["LaMP-2N", "LaMP_2N", "lamp_2n", "2N", "2n", "news_categorize", LAMP_2N])
def test_get_task_aliases(name):
    assert get_task(name) is LAMP_2N


def test_get_task_rejects_unknown_and_ambiguous():
    with pytest.raises(InvalidInputError, match="unknown task"):
        get_task("LaMP-9")
    with pytest.raises(InvalidInputError, match="ambiguous"):
        get_task("LaMP_2")


def test_question_round_trip_through_marker():
    for task in (LAMP_2N, LAMP_2M, LAMP_3, LAMP_4):
        text = "Some content: with a colon."
        assert task.extract_content(task.format_question(text)) == text
    assert LAMP_1.format_question("q") == "q" and LAMP_1.extract_content(" q ") == "q"


def test_source_maps_land_on_the_label_sets():
    assert set(CATEGORY_MAP.values()) == set(LAMP_2N.labels)
    assert set(TAG_SYNONYMS.values()) <= set(LAMP_2M.labels)
    assert not set(TAG_SYNONYMS) & set(LAMP_2M.labels)
