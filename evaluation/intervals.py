"""Seeded percentile-bootstrap confidence intervals, for any metric.

With 40-60 queries per task, a difference of 0.1 accuracy can be noise; every number in a results table
carries its 95% interval. Resampling is over examples (query, prediction, gold) with replacement, and the
metric is recomputed on each resample, so corpus-level metrics such as macro-F1 get honest intervals too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from persona_agent.core.errors import InvalidInputError
from persona_agent.evaluation.metrics import Metric


class Interval(BaseModel):
    """A point estimate with its bootstrap interval."""

    model_config = ConfigDict(frozen=True)

    estimate: float
    low: float
    high: float
    confidence: float
    n_resamples: int
    seed: int


def bootstrap_interval(
    metric: Metric,
    predictions: Sequence[Any],
    golds: Sequence[Any],
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """`metric(predictions, golds)` with a percentile interval; the same seed gives the same interval."""
    if len(predictions) != len(golds) or not golds:
        raise InvalidInputError(
            "predictions", len(predictions), f"need as many predictions as golds ({len(golds)}), > 0"
        )
    if n_resamples < 1:
        raise InvalidInputError("n_resamples", n_resamples, "must be >= 1")
    if not 0 < confidence < 1:
        raise InvalidInputError("confidence", confidence, "must be between 0 and 1")
    preds, gold = list(predictions), list(golds)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
    values = np.array([metric([preds[i] for i in row], [gold[i] for i in row]) for row in draws])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(
        estimate=float(metric(preds, gold)),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )


def bootstrap_mean_interval(
    values: Sequence[float], *, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """The mean of per-example scores (correct 0/1, absolute error, ROUGE) with its interval, vectorized."""
    if not values:
        raise InvalidInputError("values", values, "no scores")
    if n_resamples < 1:
        raise InvalidInputError("n_resamples", n_resamples, "must be >= 1")
    if not 0 < confidence < 1:
        raise InvalidInputError("confidence", confidence, "must be between 0 and 1")
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(n_resamples, len(data)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Interval(
        estimate=float(data.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
    )
