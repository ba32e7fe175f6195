"""Scores with 95% percentile bootstrap intervals over queries, for a run's report (`report.py`).

Scores are LaMP's official metrics (`metrics.score`); the macro-F1 and RMSE resamples are vectorized here (the
same draws as `intervals.bootstrap_interval`, which recomputes the metric in Python per resample and takes
seconds per method at a few hundred queries).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from persona_agent.core.tasks import MetricKind, TaskSpec
from persona_agent.evaluation.floors import round_rating
from persona_agent.evaluation.intervals import bootstrap_mean_interval
from persona_agent.evaluation.metrics import label_index, rating_value, rouge_per_example, score

N_RESAMPLES = 1000
CONFIDENCE = 0.95
ROUNDED = "accuracy (rounded)"
METRIC_TITLES = {"accuracy": "accuracy", "f1": "macro-F1", "MAE": "MAE", "RMSE": "RMSE", ROUNDED: ROUNDED}


def _interval(estimate: float, samples: np.ndarray) -> dict[str, float]:
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def _draws(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(N_RESAMPLES, n))


def macro_f1_resamples(pred_ids: np.ndarray, gold_ids: np.ndarray, n_labels: int, draws: np.ndarray) -> np.ndarray:
    """Macro-F1 (over every label, zero when a label has no true positive) of each resample, vectorized."""
    p, g = pred_ids[draws], gold_ids[draws]
    total = np.zeros(draws.shape[0])
    for label in range(n_labels):
        tp = ((p == label) & (g == label)).sum(axis=1)
        fp = ((p == label) & (g != label)).sum(axis=1)
        fn = ((p != label) & (g == label)).sum(axis=1)
        denominator = 2 * tp + fp + fn
        total += np.where(tp > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return total / n_labels


def score_with_intervals(task: TaskSpec, predictions: Sequence[str], golds: Sequence[str], seed: int) -> dict:
    """Each metric of `task` (plus rounded accuracy for ratings) as {estimate, low, high}."""
    official = score(task, predictions, golds)
    draws = _draws(len(golds), seed)
    out: dict[str, dict[str, float]] = {}
    if task.metric_kind is MetricKind.CLASSIFICATION:
        pred_ids = np.array([label_index(p, task.labels) for p in predictions])
        gold_ids = np.array([label_index(g, task.labels) for g in golds])
        correct = (pred_ids == gold_ids).astype(float)
        out["accuracy"] = _interval(official["accuracy"], correct[draws].mean(axis=1))
        out["f1"] = _interval(official["f1"], macro_f1_resamples(pred_ids, gold_ids, len(task.labels), draws))
    elif task.metric_kind is MetricKind.REGRESSION:
        errors = np.array([rating_value(p, g) - float(g) for p, g in zip(predictions, golds, strict=True)])
        out["MAE"] = _interval(official["MAE"], np.abs(errors)[draws].mean(axis=1))
        out["RMSE"] = _interval(official["RMSE"], np.sqrt((errors**2)[draws].mean(axis=1)))
        hits = [float(round_rating(p) == str(g).strip()) for p, g in zip(predictions, golds, strict=True)]
        rounded = bootstrap_mean_interval(hits, n_resamples=N_RESAMPLES, confidence=CONFIDENCE, seed=seed)
        out[ROUNDED] = {"estimate": rounded.estimate, "low": rounded.low, "high": rounded.high}
    else:
        per = np.array(rouge_per_example(predictions, golds))
        out["rouge-1"] = _interval(official["rouge-1"], per[:, 0][draws].mean(axis=1))
        out["rouge-L"] = _interval(official["rouge-L"], per[:, 1][draws].mean(axis=1))
    return out
