"""Bootstrap intervals: deterministic for a seed, sensible around the estimate."""

from __future__ import annotations

import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.evaluation.intervals import bootstrap_interval, bootstrap_mean_interval
from persona_agent.evaluation.metrics import metric_function

PREDS = ["politics", "sports", "crime", "women", "politics", "travel"] * 5
GOLDS = ["politics", "sports", "women", "women", "crime", "travel"] * 5


def test_same_seed_same_interval_other_seed_other_interval():
    f1 = metric_function("LaMP-2N", "f1")
    first = bootstrap_interval(f1, PREDS, GOLDS, n_resamples=200, seed=7)
    assert bootstrap_interval(f1, PREDS, GOLDS, n_resamples=200, seed=7) == first
    assert bootstrap_interval(f1, PREDS, GOLDS, n_resamples=200, seed=8) != first
    assert first.low <= first.estimate <= first.high
    assert first.estimate == pytest.approx(f1(PREDS, GOLDS))
    assert (first.confidence, first.n_resamples, first.seed) == (0.95, 200, 7)


def test_accuracy_interval_and_mean_interval_agree_in_shape():
    acc = metric_function("LaMP-2N", "accuracy")
    whole = bootstrap_interval(acc, PREDS, GOLDS, n_resamples=300, seed=1)
    correct = [float(p == g) for p, g in zip(PREDS, GOLDS, strict=True)]
    fast = bootstrap_mean_interval(correct, n_resamples=300, seed=1)
    assert whole.estimate == fast.estimate == pytest.approx(4 / 6)
    assert 0.4 < fast.low < fast.estimate < fast.high < 0.9
    assert bootstrap_mean_interval(correct, n_resamples=300, seed=1) == fast


def test_degenerate_and_bad_arguments():
    constant = bootstrap_mean_interval([1.0, 1.0, 1.0], seed=3)
    assert (constant.low, constant.estimate, constant.high) == (1.0, 1.0, 1.0)
    acc = metric_function("LaMP-3", "MAE")
    with pytest.raises(InvalidInputError):
        bootstrap_interval(acc, ["1"], ["1", "2"])
    with pytest.raises(InvalidInputError):
        bootstrap_interval(acc, ["1"], ["1"], n_resamples=0)
    with pytest.raises(InvalidInputError):
        bootstrap_mean_interval([1.0], confidence=1.0)
    with pytest.raises(InvalidInputError):
        bootstrap_mean_interval([])
