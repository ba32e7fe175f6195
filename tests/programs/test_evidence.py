"""The evidence an agent starts from (issue 39): the model times the user's smoothed label prior for
categories, the model alone for ratings."""

from __future__ import annotations

import pytest

from persona_agent.programs.evidence import Evidence, EvidenceWeights, default_weights, label_prior

LABELS = ("politics", "sports", "travel", "food", "science")


def test_categories_start_from_the_model_times_the_prior_ratings_from_the_model_alone():
    assert default_weights(LABELS) == EvidenceWeights(lm=1.0, vote=0.0, prior=1.0)
    assert default_weights(("1", "2", "3", "4", "5")) == EvidenceWeights()
    assert default_weights(None) == EvidenceWeights()


def test_the_prior_is_smoothed_by_one_pseudo_count():
    prior = label_prior(["politics", "politics", "sports", "unknown label"], LABELS)
    assert prior["politics"] == pytest.approx((2 + 0.2) / 4)
    assert prior["travel"] == pytest.approx(0.2 / 4)
    assert sum(prior.values()) == pytest.approx(1.0)
    assert label_prior([], LABELS) == pytest.approx(dict.fromkeys(LABELS, 0.2))


def test_a_single_past_label_is_a_preference_not_a_filter():
    model = {"politics": 0.9, "sports": 0.05, "travel": 0.05}
    one = Evidence(LABELS, model, {}, label_prior(["sports"], LABELS))
    assert one.answer(default_weights(LABELS)) == "politics"  # a confident model outweighs one past label
    many = Evidence(LABELS, {"politics": 0.55, "sports": 0.45}, {}, label_prior(["sports"] * 6, LABELS))
    assert many.answer(default_weights(LABELS)) == "sports"  # a consistent user outweighs a hesitant model
    assert many.answer(EvidenceWeights()) == "politics"
