"""Fitting a user's evidence weights (`EvidenceWeights`) on their own latest interactions.

A planned-mode answer over a closed label set records its evidence (the model's, the neighbours' and the
user's label distributions); the answer under any weights is then a few multiplications, so every
candidate on a small grid is scored on the same records at no further LM cost. The best candidate wins
on the task metric, then on the log-probability it gives the truth (a finer signal on a handful of examples);
remaining ties keep the weights closest to the current ones.

A grid's best on a handful of records is mostly noise (on the dev sample, weights fitted on one to three
records moved answers the wrong way), so the fit is adopted only when the fitting itself is shown to
generalise: with at least `MIN_RECORDS` records, each record is answered by weights fitted on the others
(leave-one-out), and that score must beat the current weights' strictly. Otherwise the current weights stay.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from persona_agent.programs.evidence import Evidence, EvidenceWeights

GRID: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
MIN_RECORDS = 6  # fewer records than this never move a user's weights


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
    """The weights to use (`weights`: the grid's best if adopted, else the current ones), the grid's best
    (`proposed`) with its in-sample and leave-one-out scores, and the current weights' on the same records."""

    weights: EvidenceWeights
    proposed: EvidenceWeights
    score: float
    soft: float
    cv_score: float | None
    baseline_score: float
    baseline_soft: float
    n: int
    adopted: bool
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "weights": self.weights.to_dict(),
            "proposed": self.proposed.to_dict(),
            "score": round(self.score, 4),
            "soft": round(self.soft, 4),
            "cv_score": None if self.cv_score is None else round(self.cv_score, 4),
            "baseline_score": round(self.baseline_score, 4),
            "baseline_soft": round(self.baseline_soft, 4),
            "n": self.n,
            "adopted": self.adopted,
            "reason": self.reason,
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


def _scores(records: Sequence[tuple[Evidence, str]], weights: EvidenceWeights) -> tuple[float, float]:
    hard = sum(hard_score(ev, weights, gold) for ev, gold in records) / len(records)
    soft = sum(soft_score(ev, weights, gold) for ev, gold in records) / len(records)
    return hard, soft


def best_weights(
    records: Sequence[tuple[Evidence, str]], current: EvidenceWeights, grid: Sequence[float], use_lm: bool
) -> EvidenceWeights:
    """The grid's best weights on the records, with no leave-one-out check (`fit_weights` adds it): the metric,
    then the soft score, then the nearest to `current`."""
    return max(
        candidates(grid, use_lm=use_lm),
        key=lambda w: (*(round(s, 9) for s in _scores(records, w)), -_distance(w, current)),
    )


def fit_weights(
    records: Sequence[tuple[Evidence, str]],
    current: EvidenceWeights,
    *,
    grid: Sequence[float] = GRID,
    use_lm: bool = True,
    min_records: int = MIN_RECORDS,
) -> WeightFit:
    """The grid's best weights on `(evidence, truth)` records, adopted only if leave-one-out says they beat
    `current` (see the module docstring)."""
    if not records:
        raise ValueError("fitting evidence weights needs at least one record")
    proposed = best_weights(records, current, grid, use_lm)
    hard, soft = _scores(records, proposed)
    base_hard, base_soft = _scores(records, current)
    cv: float | None = None
    if len(records) < max(2, min_records):
        adopted, reason = False, f"{len(records)} records, fewer than {max(2, min_records)}"
    else:
        held_out = [
            hard_score(ev, best_weights([*records[:i], *records[i + 1 :]], current, grid, use_lm), gold)
            for i, (ev, gold) in enumerate(records)
        ]
        cv = sum(held_out) / len(held_out)
        adopted = cv > base_hard + 1e-9 and proposed != current
        reason = (
            "leave-one-out beats the current weights" if adopted else "leave-one-out does not beat the current weights"
        )
    weights = proposed if adopted else current
    return WeightFit(weights, proposed, hard, soft, cv, base_hard, base_soft, len(records), adopted, reason)


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
