"""The no-LM floors: what a user's own past predicts without any model.

They see exactly what the LM methods see for a query: the user's memory items strictly before it.
For LaMP-3 the majority floor is the mean rating (as the issue defines it) and `median` adds the user's
median rating, the better reference for MAE. They are deterministic (ties broken by recency, then by
label), so a rerun gives the same table.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.records import Item
from persona_agent.core.tasks import MetricKind, TaskSpec
from persona_agent.evaluation.metrics import normalize_output
from persona_agent.stores.memory import MemoryStore


def majority_label(items: Sequence[Item]) -> str | None:
    """The most frequent output; a tie goes to the label used most recently. None without items."""
    if not items:
        return None
    counts = Counter(normalize_output(it.output) for it in items)
    last_seen = {normalize_output(it.output): i for i, it in enumerate(items)}
    return max(counts, key=lambda label: (counts[label], last_seen[label]))


def _ratings(items: Sequence[Item]) -> list[float]:
    values = []
    for it in items:
        try:
            value = float(normalize_output(it.output))
        except ValueError:
            continue
        if math.isfinite(value):
            values.append(value)
    return values


def mean_rating(items: Sequence[Item]) -> str | None:
    """The user's mean rating as text (6 decimals), which MAE/RMSE score as the number it is."""
    values = _ratings(items)
    if not values:
        return None
    return f"{sum(values) / len(values):.6f}".rstrip("0").rstrip(".")


def median_rating(items: Sequence[Item]) -> str | None:
    """The user's median rating, a whole star: the constant with the least absolute error on their past
    ratings, so the strongest no-LM reference for MAE. Of two middle values, the one nearer the mean (the
    higher on a tie)."""
    values = sorted(_ratings(items))
    if not values:
        return None
    low, high = statistics.median_low(values), statistics.median_high(values)
    mean = sum(values) / len(values)
    value = low if abs(low - mean) < abs(high - mean) else high
    return f"{value:.6f}".rstrip("0").rstrip(".")


def round_rating(prediction: str | None) -> str | None:
    """A rating rounded half up to a whole star in 1..5 ("4.5" -> "5"); None if it is not a number."""
    if prediction is None:
        return None
    try:
        value = float(normalize_output(prediction))
    except ValueError:
        return None
    if not math.isfinite(value):
        return None
    return str(min(5, max(1, math.floor(value + 0.5))))


def majority_prediction(task: TaskSpec, items: Sequence[Item]) -> str | None:
    """The majority floor of `task`: the majority label, or the mean rating for LaMP-3."""
    if task.metric_kind is MetricKind.GENERATION:
        raise InvalidInputError("method", "majority", f"{task.name} is free text: no majority output")
    if task.metric_kind is MetricKind.REGRESSION:
        return mean_rating(items)
    return majority_label(items)


def nearest_label(store: MemoryStore, user_id: str, query: str, before: datetime) -> str | None:
    """The output of the user's memory item most similar to `query` (strictly before `before`)."""
    if store.count(user_id) == 0:
        return None
    hits = store.search(user_id, query, k=1, before=before)
    return hits[0].interaction.response if hits else None
