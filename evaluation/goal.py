"""The goal check: does the planned agent earn its LM calls on this run?

The planned agent is built to beat what costs nothing (the best no-LM floor, which includes the memory's own
fitted neighbour vote) and the one-call baseline (RAG), query by query and significantly, within a small
per-answer budget, with alignment that helps. Each criterion is computed from the run's own rows, so a
report says by itself whether the goal holds, criterion by criterion, and with which figures:

- `queries`: the planned agent answered at least `min_queries` queries (fewer cannot show a small gain);
- `beats best floor` / `beats RAG`: more wins than losses against the method, two-sided sign test p < `alpha`
  (the best floor is the floor with the best primary metric on the run);
- `median LM calls`: per answer, at most `max_median_calls`;
- `median seconds`: per answer, at most `max_median_seconds`, taking the larger median of the planned agent and
  its unaligned twin: the twin answers each query first, and when alignment left the prompt as it was the
  aligned answer reuses its whole prompt from the model's cache, which a user's first call would not;
- `alignment helps`: against the same agent without alignment, more answers changed for the better than for
  the worse (its sign-test p is reported beside it).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from persona_agent.evaluation.head_to_head import PLANNED

UNALIGNED_PLANNED = "planned_no_alignment"
RAG = "rag"

Row = dict[str, Any]


@dataclass(frozen=True)
class GoalThresholds:
    min_queries: int = 300
    alpha: float = 0.05
    max_median_calls: float = 1.5
    max_median_seconds: float = 15.0


@dataclass(frozen=True)
class Criterion:
    """One criterion: its name, whether it holds, and the measured figure it was decided on, in words."""

    name: str
    met: bool
    measured: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_costs(rows: Sequence[Row]) -> dict[str, float]:
    """The median LM calls and seconds per answer of prediction rows (0 for none)."""
    return {
        "calls": float(statistics.median([r.get("calls") or 0 for r in rows])) if rows else 0.0,
        "seconds": float(statistics.median([r.get("seconds") or 0 for r in rows])) if rows else 0.0,
    }


def _matchup(h2h: Mapping[str, Any] | None, method: str) -> Mapping[str, Any] | None:
    return next((m for m in (h2h or {}).get("matchups", ()) if m["method"] == method), None)


def _beats(name: str, matchup: Mapping[str, Any] | None, label: str, alpha: float) -> Criterion:
    if matchup is None:
        return Criterion(name, False, f"{label}: not run")
    wins, losses, p = matchup["wins"], matchup["losses"], matchup["p_value"]
    return Criterion(
        name,
        wins > losses and p < alpha,
        f"{label}: {wins} wins, {losses} losses, {matchup['ties']} ties of {matchup['n']}, p = {p:.3g}",
    )


def goal_check(
    summary: Sequence[Mapping[str, Any]],
    by_method: Mapping[str, Sequence[Row]],
    planned_head_to_head: Mapping[str, Any] | None,
    alignment_effects: Sequence[Mapping[str, Any]],
    primary_metric: str,
    lower_is_better: bool,
    thresholds: GoalThresholds = GoalThresholds(),
) -> dict[str, Any] | None:
    """Every criterion of the module docstring and whether all hold; None when the planned agent did not run."""
    planned_rows = by_method.get(PLANNED)
    if not planned_rows:
        return None
    t = thresholds
    entries = {s["method"]: s for s in summary}
    floors = [s for s in summary if s["group"] == "floor"]
    sign = 1 if lower_is_better else -1
    best_floor = min(floors, key=lambda s: sign * s["metrics"][primary_metric]["estimate"]) if floors else None
    mine = median_costs(planned_rows)
    twin = median_costs(by_method.get(UNALIGNED_PLANNED, ()))
    seconds = max(mine["seconds"], twin["seconds"])
    effect = next((e for e in alignment_effects if e["method"] == PLANNED), None)
    n = len(planned_rows)
    criteria = [
        Criterion("queries", n >= t.min_queries, f"{n} answered (at least {t.min_queries})"),
        _beats(
            "beats best floor",
            _matchup(planned_head_to_head, best_floor["method"]) if best_floor else None,
            best_floor["label"] if best_floor else "no floor",
            t.alpha,
        ),
        _beats("beats RAG", _matchup(planned_head_to_head, RAG), entries.get(RAG, {}).get("label", "RAG"), t.alpha),
        Criterion(
            "median LM calls",
            mine["calls"] <= t.max_median_calls,
            f"{mine['calls']:g} per answer (at most {t.max_median_calls:g})",
        ),
        Criterion(
            "median seconds",
            seconds <= t.max_median_seconds,
            f"{seconds:.1f} s per answer (aligned {mine['seconds']:.1f}, unaligned {twin['seconds']:.1f}; "
            f"at most {t.max_median_seconds:g})",
        ),
        Criterion(
            "alignment helps",
            effect is not None and effect["better"] > effect["worse"],
            "not run"
            if effect is None
            else f"{effect['answers_changed']} of {effect['queries']} answers changed: {effect['better']} better, "
            f"{effect['worse']} worse, p = {effect['p_value']:.3g}",
        ),
    ]
    return {
        "thresholds": asdict(t),
        "best_floor": best_floor["method"] if best_floor else None,
        "median_costs": {PLANNED: mine, UNALIGNED_PLANNED: twin},
        "criteria": [c.as_dict() for c in criteria],
        "met": all(c.met for c in criteria),
    }
