"""Metrics the aligner can compare personas with (DSPy's `metric(example, prediction, trace=None)`)."""

from __future__ import annotations

from typing import Any

import dspy


def normalize(value: Any) -> str:
    return " ".join(str(value).strip().lower().split())


def exact_match(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    """1.0 when every output field of the prediction equals the example's (case- and space-insensitive)."""
    fields = [k for k in example.labels().keys() if k in prediction]
    if not fields:
        return 0.0
    return float(all(normalize(example[k]) == normalize(prediction[k]) for k in fields))
