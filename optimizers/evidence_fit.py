"""Fitting a user's evidence weights (`EvidenceWeights`) on their own latest interactions.

A planned-mode answer over a closed label set records its evidence (the model's, the neighbours' and the
user's label distributions); the answer under any weights is then a few multiplications, so every
candidate on a small grid is scored on the same records at no further LM cost. The best candidate wins
on the task metric, then on the log-probability it gives the truth (a finer signal on a handful of examples);
remaining ties keep the weights closest to the current ones, so a user's few examples move the weights
only when they say something.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from persona_agent.programs.evidence import Evidence, EvidenceWeights

GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)


def soft_score(evidence: Evidence, weights: EvidenceWeights, gold: str) -> float:
    """The log-probability the combination gives the truth (a proper score: it does not reward confidence
    for its own sake); for ordinal labels minus its expected absolute error."""
    dist = evidence.combined(weights)
    if not evidence.ordinal:
        return math.log(dist.get(gold, 0.0) + 1e-9)
    return -sum(p * abs(float(label) - float(gold)) for label, p in dist.items())


def hard_score(evidence: Evidence, weights: EvidenceWeights, gold: str) -> float:
    """The task metric of the answer: exact match, or minus the absolute error for ordinal labels."""
    answer = evidence.answer(weights)
    return -abs(float(answer) - float(gold)) if evidence.ordinal else float(answer == gold)


@dataclass(frozen=True)
class WeightFit:
    """The fitted weights, their scores and the current weights' on the same records."""

    weights: EvidenceWeights
    score: float
    soft: float
    baseline_score: float
    baseline_soft: float
    n: int

    def to_dict(self) -> dict[str, object]:
        return {
            "weights": self.weights.to_dict(),
            "score": round(self.score, 4),
            "soft": round(self.soft, 4),
            "baseline_score": round(self.baseline_score, 4),
            "baseline_soft": round(self.baseline_soft, 4),
            "n": self.n,
        }


def candidates(grid: Sequence[float] = GRID, *, use_lm: bool = True) -> list[EvidenceWeights]:
    lm_values = grid if use_lm else (0.0,)
    return [
        EvidenceWeights(lm=a, vote=b, prior=c)
        for a, b, c in itertools.product(lm_values, grid, grid)
        if a + b + c > 0 and (not use_lm or a > 0)
    ]


def _distance(a: EvidenceWeights, b: EvidenceWeights) -> float:
    return abs(a.lm - b.lm) + abs(a.vote - b.vote) + abs(a.prior - b.prior)


def fit_weights(
    records: Sequence[tuple[Evidence, str]],
    current: EvidenceWeights,
    *,
    grid: Sequence[float] = GRID,
    use_lm: bool = True,
) -> WeightFit:
    """The grid's best weights on `(evidence, truth)` records (see the module docstring)."""
    if not records:
        raise ValueError("fitting evidence weights needs at least one record")

    def scores(weights: EvidenceWeights) -> tuple[float, float]:
        hard = sum(hard_score(ev, weights, gold) for ev, gold in records) / len(records)
        soft = sum(soft_score(ev, weights, gold) for ev, gold in records) / len(records)
        return hard, soft

    best = max(
        candidates(grid, use_lm=use_lm),
        key=lambda w: (*(round(s, 9) for s in scores(w)), -_distance(w, current)),
    )
    hard, soft = scores(best)
    base_hard, base_soft = scores(current)
    return WeightFit(best, hard, soft, base_hard, base_soft, len(records))


def evidence_records(records: Sequence[Mapping[str, object]], output: str) -> list[tuple[Evidence, str]]:
    """(evidence, truth) pairs from simulation records that carry a planned answer's evidence."""
    pairs = []
    for record in records:
        evidence = record.get("evidence")
        truth = (record.get("ground_truth") or {}).get(output)  # type: ignore[union-attr]
        if isinstance(evidence, Mapping) and truth is not None:
            pairs.append((Evidence.from_dict(evidence), str(truth)))
    return pairs


def acceptance_key(
    records: Sequence[Mapping[str, object]], output: str, weights: EvidenceWeights
) -> tuple[float, float] | None:
    """How well simulated answers did: the mean metric score, then the mean soft score of those that carry
    evidence (0 when none does). None if no record was scored."""
    scores = [float(r["score"]) for r in records if r.get("score") is not None]  # type: ignore[arg-type]
    if not scores:
        return None
    pairs = evidence_records(records, output)
    soft = sum(soft_score(ev, weights, gold) for ev, gold in pairs) / len(pairs) if pairs else 0.0
    return sum(scores) / len(scores), soft
