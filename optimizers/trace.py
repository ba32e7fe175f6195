"""`AlignmentTrace`: what a compile did, typed and frozen. A compiled agent carries it as plain JSON data
(`alignment_trace`, `AlignmentTrace.to_dict()`), which MLflow logs as `alignment_trace.json`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from persona_agent.optimizers.simulation import jsonable

# The key order of each strategy's trace as saved.
ALIGNER_KEYS = (
    "strategy",
    "user_id",
    "config",
    "estimate",
    "initial_persona",
    "iterations",
    "stop_reason",
    "final_persona",
    "evidence_fit",
    "usage",
    "seconds",
)
SEARCH_KEYS = (
    "strategy",
    "user_id",
    "initial_persona",
    "final_persona",
    "constrained",
    "persona_check",
    "proposals",
    "evaluations",
    "val_scores",
    "candidates",
    "run_dir",
    "stop_reason",
    "usage",
    "seconds",
)


@dataclass(frozen=True)
class AlignmentTrace:
    """One compile: the personas before and after, why it stopped, what it cost; then each strategy's own
    record (None: the strategy does not record it, and the key is left out of `to_dict`)."""

    strategy: str
    user_id: str
    initial_persona: Mapping[str, Any]
    final_persona: Mapping[str, Any]
    stop_reason: str
    usage: Mapping[str, Any]
    seconds: float
    # PersonaAligner: its settings, the estimate, one record per iteration
    config: Mapping[str, Any] | None = None
    estimate: Mapping[str, Any] | None = None
    iterations: Sequence[Mapping[str, Any]] | None = None
    evidence_fit: Mapping[str, Any] | None = None  # the fitted evidence weights (planned mode, label tasks)
    # GEPA and COPRO: whether proposals were held to the guard, its check of the result, its note per proposal
    constrained: bool | None = None
    persona_check: str | None = None
    proposals: Sequence[Mapping[str, Any]] | None = None
    # GEPA: each evaluated candidate's scores, the validation scores, the candidates, its run folder
    evaluations: Sequence[Mapping[str, Any]] | None = None
    val_scores: Sequence[float] | None = None
    candidates: Sequence[str] | None = None
    run_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The trace as plain JSON data, keys in the order they are saved."""
        keys = ALIGNER_KEYS if self.strategy == "persona_aligner" else SEARCH_KEYS
        return jsonable({k: getattr(self, k) for k in keys if getattr(self, k) is not None})
