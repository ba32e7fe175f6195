"""LaMP's official metrics, computed the way its evaluation script computes them.

Mirrors `LaMP-Benchmark/LaMP` `eval/evaluation.py` (and OPPU's copy, which adds the 2N/2M split):
- Normalization: `str(output).strip()` for predictions and golds; nothing else (no lower-casing), so
  "Sci-Fi" is not "sci-fi". Methods must emit labels exactly.
- Classification: each output maps to its index in the task's label list, an off-list output to -1;
  accuracy is the share of exact index matches; F1 is sklearn's `f1_score(labels=range(len(labels)),
  average="macro")`: per-label F1 averaged over *all* labels of the task, so a label that no gold and no
  prediction uses scores 0 (sklearn's zero_division default), and a -1 prediction is a miss for its
  gold's label but a false positive for none.
- Rating: `float(output)`; a prediction that does not parse scores as whichever of 1 and 5 is farther
  from the gold (5 on a tie at 3, as LaMP's `abs(1 - y) > abs(5 - y)` test gives). MAE and RMSE.
- Headlines: ROUGE-1 and ROUGE-L F-measure from Google's `rouge-score` (what `evaluate.load("rouge")`
  wraps), no stemming (evaluate's default).

Two deliberate differences, neither of which changes a score on valid data: golds must be valid (an
off-list or non-numeric gold raises instead of silently matching an off-list prediction), and ROUGE is
the plain mean of per-example F-measures, where `evaluate` reports the median of 1,000 random bootstrap
means (equal up to resampling noise, and not reproducible). A non-finite parse ("nan", "inf") counts as
non-numeric, since it would otherwise make the mean undefined.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.tasks import MetricKind, TaskSpec, get_task

Metric = Callable[[Sequence[str], Sequence[str]], float]


def normalize_output(output: object) -> str:
    """LaMP's only normalization: `str(x).strip()`."""
    return str(output).strip()


def _pairs(predictions: Sequence[Any], golds: Sequence[Any]) -> None:
    if isinstance(predictions, str) or isinstance(golds, str):
        raise InvalidInputError("predictions", predictions, "expected sequences of outputs, not one string")
    if len(predictions) != len(golds):
        raise InvalidInputError(
            "predictions", len(predictions), f"{len(golds)} golds but {len(predictions)} predictions"
        )
    if not golds:
        raise InvalidInputError("golds", golds, "no examples to score")


def label_index(output: object, labels: Sequence[str]) -> int:
    """The index of the normalized output in `labels`, or -1 when it is not one of them."""
    text = normalize_output(output)
    return labels.index(text) if text in labels else -1


def _indices(predictions: Sequence[Any], golds: Sequence[Any], labels: Sequence[str]) -> tuple[list[int], list[int]]:
    _pairs(predictions, golds)
    if not labels:
        raise InvalidInputError("labels", labels, "a classification metric needs the task's label set")
    gold_ids = [label_index(g, labels) for g in golds]
    for gold, index in zip(golds, gold_ids, strict=True):
        if index < 0:
            raise InvalidInputError("golds", gold, f"not one of the labels {list(labels)}")
    return [label_index(p, labels) for p in predictions], gold_ids


def accuracy(predictions: Sequence[Any], golds: Sequence[Any], labels: Sequence[str]) -> float:
    """Share of predictions equal to the gold label after normalization; off-list outputs are wrong."""
    preds, gold_ids = _indices(predictions, golds, labels)
    return sum(p == g for p, g in zip(preds, gold_ids, strict=True)) / len(gold_ids)


def macro_f1(predictions: Sequence[Any], golds: Sequence[Any], labels: Sequence[str]) -> float:
    """Macro-F1 over every label of the task (sklearn `labels=range(L)`, zero_division 0)."""
    preds, gold_ids = _indices(predictions, golds, labels)
    total = 0.0
    for label in range(len(labels)):
        tp = sum(p == label and g == label for p, g in zip(preds, gold_ids, strict=True))
        fp = sum(p == label and g != label for p, g in zip(preds, gold_ids, strict=True))
        fn = sum(p != label and g == label for p, g in zip(preds, gold_ids, strict=True))
        total += 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return total / len(labels)


def rating_value(prediction: object, gold: object) -> float:
    """The number LaMP scores for a rating prediction: its float value, or the farther of 1 and 5 from gold."""
    target = _gold_rating(gold)
    try:
        value = float(normalize_output(prediction))
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    return 1.0 if abs(1 - target) > abs(5 - target) else 5.0


def _gold_rating(gold: object) -> float:
    try:
        value = float(normalize_output(gold))
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidInputError("golds", gold, "a rating gold must be a number")
    return value


def rating_errors(predictions: Sequence[Any], golds: Sequence[Any]) -> list[float]:
    """Signed error of each rating prediction against its gold, as MAE and RMSE see it."""
    _pairs(predictions, golds)
    return [rating_value(p, g) - _gold_rating(g) for p, g in zip(predictions, golds, strict=True)]


def mae(predictions: Sequence[Any], golds: Sequence[Any]) -> float:
    """Mean absolute error of ratings (non-numeric predictions as LaMP scores them)."""
    errors = rating_errors(predictions, golds)
    return sum(abs(e) for e in errors) / len(errors)


def rmse(predictions: Sequence[Any], golds: Sequence[Any]) -> float:
    """Root mean squared error of ratings (non-numeric predictions as LaMP scores them)."""
    errors = rating_errors(predictions, golds)
    return math.sqrt(sum(e * e for e in errors) / len(errors))


@lru_cache(maxsize=1)
def _scorer() -> Any:
    # Imported here: rouge-score pulls in nltk, which is slow to import and only needed for LaMP-4.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)


def rouge_per_example(predictions: Sequence[Any], golds: Sequence[Any]) -> list[tuple[float, float]]:
    """(ROUGE-1, ROUGE-L) F-measure of each prediction against its gold."""
    _pairs(predictions, golds)
    scorer = _scorer()
    out = []
    for prediction, gold in zip(predictions, golds, strict=True):
        scores = scorer.score(normalize_output(gold), normalize_output(prediction))
        out.append((scores["rouge1"].fmeasure, scores["rougeL"].fmeasure))
    return out


def rouge_1(predictions: Sequence[Any], golds: Sequence[Any]) -> float:
    scores = rouge_per_example(predictions, golds)
    return sum(r1 for r1, _ in scores) / len(scores)


def rouge_l(predictions: Sequence[Any], golds: Sequence[Any]) -> float:
    scores = rouge_per_example(predictions, golds)
    return sum(rl for _, rl in scores) / len(scores)


def metric_function(task: str | TaskSpec, name: str) -> Metric:
    """The metric `name` of `task` as a `(predictions, golds) -> float` (e.g. for `bootstrap_interval`)."""
    spec = get_task(task)
    labels = spec.labels
    table: dict[str, Metric] = {
        "accuracy": lambda p, g: accuracy(p, g, labels),
        "f1": lambda p, g: macro_f1(p, g, labels),
        "MAE": mae,
        "RMSE": rmse,
        "rouge-1": rouge_1,
        "rouge-L": rouge_l,
    }
    if name not in spec.metric_names:
        raise InvalidInputError("name", name, f"{spec.name} is scored by {', '.join(spec.metric_names)}")
    return table[name]


def lower_is_better(name: str) -> bool:
    """True for error metrics (MAE, RMSE), so tables can say which way is better."""
    return name in ("MAE", "RMSE")


def score(task: str | TaskSpec, predictions: Sequence[Any], golds: Sequence[Any]) -> dict[str, float]:
    """Every metric of `task`, keyed as LaMP's evaluation keys them (accuracy/f1, MAE/RMSE, rouge-1/rouge-L)."""
    spec = get_task(task)
    if spec.metric_kind is MetricKind.GENERATION:
        scores = rouge_per_example(predictions, golds)
        return {
            "rouge-1": sum(r1 for r1, _ in scores) / len(scores),
            "rouge-L": sum(rl for _, rl in scores) / len(scores),
        }
    return {name: metric_function(spec, name)(predictions, golds) for name in spec.metric_names}
