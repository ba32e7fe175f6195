"""LaMP's metrics against values computed by hand (and, where installed, against sklearn itself)."""

from __future__ import annotations

import math

import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.tasks import LAMP_2N
from persona_agent.evaluation.metrics import (
    accuracy,
    label_index,
    lower_is_better,
    macro_f1,
    mae,
    metric_function,
    rating_value,
    rmse,
    rouge_per_example,
    score,
)

LABELS = ["a", "b", "c"]


def test_accuracy_strips_but_is_case_sensitive():
    preds = [" a ", "b", "A", "zzz"]
    golds = ["a", "b", "a", "c"]
    assert accuracy(preds, golds, LABELS) == 0.5
    assert label_index(" c\n", LABELS) == 2 and label_index("C", LABELS) == -1


def test_macro_f1_by_hand_with_an_off_list_prediction():
    preds = ["a", "a", "b", "nonsense"]
    golds = ["a", "b", "b", "c"]
    # a: tp1 fp1 fn0 -> 2/3; b: tp1 fp0 fn1 -> 2/3; c: tp0 -> 0 (the off-list answer is a miss, no false positive)
    assert macro_f1(preds, golds, LABELS) == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_macro_f1_averages_over_labels_nobody_used():
    # a perfect run on a sample that only holds "a" still averages in b and c at 0, as LaMP/sklearn do
    assert macro_f1(["a", "a"], ["a", "a"], LABELS) == pytest.approx(1 / 3)
    assert accuracy(["a", "a"], ["a", "a"], LABELS) == 1.0


def test_macro_f1_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    labels = list(LAMP_2N.labels)
    preds = ["politics", "sports", "Sports", "women", "politics", "crime", "travel", "?"]
    golds = ["politics", "sports", "sports", "crime", "women", "crime", "travel", "parents"]
    expected = sklearn_metrics.f1_score(
        [label_index(g, labels) for g in golds],
        [label_index(p, labels) for p in preds],
        labels=list(range(len(labels))),
        average="macro",
        zero_division=0,
    )
    assert macro_f1(preds, golds, labels) == pytest.approx(expected)


def test_off_list_gold_is_an_error_not_a_match():
    with pytest.raises(InvalidInputError, match="golds"):
        accuracy(["x"], ["x"], LABELS)


def test_rating_non_numeric_scores_as_the_farther_end():
    assert rating_value("4", "5") == 4.0
    assert rating_value(" 2.5 ", "5") == 2.5
    assert rating_value("four", "5") == 1.0  # 1 is farther from 5
    assert rating_value("", "2") == 5.0  # 5 is farther from 2
    assert rating_value("n/a", "3") == 5.0  # tie: LaMP picks 5
    assert rating_value("nan", "1") == 5.0  # non-finite counts as non-numeric


def test_mae_rmse_by_hand():
    preds = ["5", "x", "3", "2.5"]
    golds = ["4", "2", "3", "1"]
    # errors: 1, |5-2| = 3, 0, 1.5
    assert mae(preds, golds) == pytest.approx(5.5 / 4)
    assert rmse(preds, golds) == pytest.approx(math.sqrt((1 + 9 + 0 + 2.25) / 4))
    assert score("LaMP-3", preds, golds) == {"MAE": pytest.approx(1.375), "RMSE": pytest.approx(1.75)}
    with pytest.raises(InvalidInputError, match="rating gold"):
        mae(["1"], ["five"])


def test_rouge_by_hand():
    # gold 4 tokens, prediction 6 tokens, 3 unigrams shared (cat, sat, mat): P 1/2, R 3/4, F 0.6
    # LCS "cat sat mat" = 3 as well
    (r1, rl), (e1, el) = rouge_per_example(["The cat sat on the mat", ""], ["a cat sat mat", "Quiet Night"])
    assert r1 == pytest.approx(0.6) and rl == pytest.approx(0.6)
    assert (e1, el) == (0.0, 0.0)
    # word order matters for L, not for 1: "mat sat cat" vs "cat sat mat" -> R1 1.0, LCS 1 of 3
    ((o1, ol),) = rouge_per_example(["mat sat cat"], ["cat sat mat"])
    assert o1 == pytest.approx(1.0) and ol == pytest.approx(1 / 3)
    assert score("LaMP-4", ["The cat sat on the mat", "mat sat cat"], ["a cat sat mat", "cat sat mat"]) == {
        "rouge-1": pytest.approx(0.8),
        "rouge-L": pytest.approx((0.6 + 1 / 3) / 2),
    }


def test_score_dispatch_and_shapes():
    assert score("LaMP-1", ["[1]", "[2]", "2"], ["[1]", "[1]", "[2]"]) == {
        "accuracy": pytest.approx(1 / 3),
        "f1": pytest.approx((2 / 3 + 0) / 2),
    }
    assert metric_function("LaMP-2N", "f1")(["politics"], ["politics"]) == pytest.approx(1 / 15)
    assert lower_is_better("MAE") and not lower_is_better("accuracy")
    with pytest.raises(InvalidInputError, match="scored by"):
        metric_function("LaMP-3", "accuracy")
    with pytest.raises(InvalidInputError):
        accuracy(["a"], ["a", "b"], LABELS)
    with pytest.raises(InvalidInputError):
        mae([], [])
    with pytest.raises(InvalidInputError):
        accuracy("a", "a", LABELS)
