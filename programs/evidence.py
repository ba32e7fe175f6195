"""Per-user evidence over a closed label set, and its weighted combination.

Three distributions over the allowed answers meet here: the model's (`ChoiceAdapter` scores), the
user's nearest past items (a similarity-weighted vote) and the user's own label frequencies (a prior).
They combine as a weighted sum of log-probabilities (a product of experts); the weights are a per-user
parameter of the compiled program (fitted by `persona_agent.optimizers.evidence_fit`), saved in its
state beside the persona. Before any fit, `default_weights` multiplies the model's distribution by the
user's prior for categories (a user who gave most past items one label mostly gives it again, which the
model alone overrides) and trusts the model alone for ratings (a user's rating frequencies pulled answers
away from the model's better estimate); both choices were measured on dev users' history, never a report
query (`benchmarks/bench_evidence_fit.py`). The prior is smoothed by one pseudo-count spread over the
labels, so a user's single past label is a preference, not a filter. With the model's weight at 0 the
combination is a no-LM floor, which the evaluation reports as one, so the model must add to the memory's
own evidence to earn its call.

Ordinal labels (ratings) answer with the weighted median of the combined distribution, which minimises
the expected absolute error; categories answer with its mode.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from persona_agent.core.errors import InvalidInputError

LM_FLOOR = 1e-4  # a label the model gave no mass is unlikely, not impossible
MEMORY_FLOOR = 1e-3
PRIOR_PSEUDOCOUNT = 1.0  # Dirichlet smoothing of the user's label frequencies, spread evenly over the labels


@dataclass(frozen=True)
class EvidenceWeights:
    """How much each source counts, per user. The bare default trusts the model alone; an agent starts from
    `default_weights` of its labels."""

    lm: float = 1.0
    vote: float = 0.0
    prior: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                raise InvalidInputError(f"evidence_weights.{name}", value, "must be a finite number >= 0")
        if self.lm + self.vote + self.prior <= 0:
            raise InvalidInputError("evidence_weights", asdict(self), "at least one weight must be positive")

    def to_dict(self) -> dict[str, float]:
        return {key: float(value) for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, float]) -> EvidenceWeights:
        unknown = set(data) - {"lm", "vote", "prior"}
        if unknown:
            raise InvalidInputError("evidence_weights", sorted(unknown), "unknown weight names")
        return cls(**{key: float(value) for key, value in data.items()})


def _normalised(values: Mapping[str, float], labels: Sequence[str]) -> dict[str, float]:
    total = sum(max(values.get(label, 0.0), 0.0) for label in labels)
    if total <= 0:
        return {label: 1.0 / len(labels) for label in labels}
    return {label: max(values.get(label, 0.0), 0.0) / total for label in labels}


def neighbour_vote(neighbours: Iterable[tuple[str, float]], labels: Sequence[str]) -> dict[str, float]:
    """The nearest past items' labels, each weighted by its (non-negative) similarity to the request."""
    mass = dict.fromkeys(labels, 0.0)
    for label, similarity in neighbours:
        if label in mass:
            mass[label] += max(float(similarity), 0.0)
    return _normalised(mass, labels)


def label_prior(past_labels: Iterable[str], labels: Sequence[str]) -> dict[str, float]:
    """The user's own label frequencies, smoothed by `PRIOR_PSEUDOCOUNT` (uniform when they have none)."""
    counts = dict.fromkeys(labels, PRIOR_PSEUDOCOUNT / len(labels))
    for label in past_labels:
        if label in counts:
            counts[label] += 1.0
    return _normalised(counts, labels)


def default_weights(labels: Sequence[str] | None) -> EvidenceWeights:
    """The weights an agent starts from (see the module docstring): the model times the user's label prior for
    categories; the model alone for ratings and open answers."""
    if labels and not is_ordinal(labels):
        return EvidenceWeights(lm=1.0, vote=0.0, prior=1.0)
    return EvidenceWeights()


@dataclass(frozen=True)
class Evidence:
    """One request's three distributions over the same labels (in the labels' order)."""

    labels: tuple[str, ...]
    lm: dict[str, float]
    vote: dict[str, float]
    prior: dict[str, float]
    ordinal: bool = False

    def combined(self, weights: EvidenceWeights) -> dict[str, float]:
        """The normalised product of experts under `weights`."""
        log = {
            label: weights.lm * math.log(self.lm.get(label, 0.0) + LM_FLOOR)
            + weights.vote * math.log(self.vote.get(label, 0.0) + MEMORY_FLOOR)
            + weights.prior * math.log(self.prior.get(label, 0.0) + MEMORY_FLOOR)
            for label in self.labels
        }
        top = max(log.values())
        return _normalised({label: math.exp(value - top) for label, value in log.items()}, self.labels)

    def answer(self, weights: EvidenceWeights) -> str:
        """The mode of the combination (the weighted median for ordinal labels); ties go to the earlier label."""
        dist = self.combined(weights)
        if not self.ordinal:
            return max(self.labels, key=dist.__getitem__)
        cumulative = 0.0
        for label in self.labels:
            cumulative += dist[label]
            if cumulative >= 0.5 - 1e-12:
                return label
        return self.labels[-1]

    def to_dict(self) -> dict[str, object]:
        return {
            "labels": list(self.labels),
            "lm": self.lm,
            "vote": self.vote,
            "prior": self.prior,
            "ordinal": self.ordinal,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Evidence:
        return cls(
            labels=tuple(data["labels"]),  # type: ignore[arg-type]
            lm=dict(data["lm"]),  # type: ignore[arg-type]
            vote=dict(data["vote"]),  # type: ignore[arg-type]
            prior=dict(data["prior"]),  # type: ignore[arg-type]
            ordinal=bool(data.get("ordinal", False)),
        )


def is_ordinal(labels: Sequence[str]) -> bool:
    """Labels that are all integers (ratings) are ordered; the answer is then a median, not a mode."""
    return all(label.strip().lstrip("-").isdigit() for label in labels)
