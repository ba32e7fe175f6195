"""PersonaAgent against each other method, query by query: where it wins and where it loses.

Two methods with the same accuracy can have got different queries right, and a table of means hides
that. On the queries both methods answered, each pair of answers is a win (PersonaAgent scored better),
a loss or a tie. The two-sided exact sign test on wins against losses says how likely so lopsided a
split is by chance. Ties carry no information about which method is better and are left out, as in
McNemar's test. A failed example scores as an empty answer, as in the report's tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from persona_agent.core.tasks import MetricKind, TaskSpec
from persona_agent.evaluation.metrics import label_index, rating_errors, rouge_per_example
from persona_agent.evaluation.plan import METHODS_BY_NAME

REFERENCE = "persona_agent"
PLANNED = "planned"  # the planned-mode agent meets every method too: the floors and RAG it must beat
PROFILE_GENERATION = "profile_generation"
_TIE = 1e-9

Row = dict[str, Any]


def example_scores(task: TaskSpec, predictions: Sequence[str], golds: Sequence[str]) -> list[float]:
    """One score per example, higher is better: 1/0 for the right label (after LaMP's normalization),
    minus the absolute rating error (a non-numeric rating at the farther of 1 and 5), or ROUGE-L."""
    if task.metric_kind is MetricKind.CLASSIFICATION:
        return [
            float(label_index(p, task.labels) == label_index(g, task.labels) >= 0)
            for p, g in zip(predictions, golds, strict=True)
        ]
    if task.metric_kind is MetricKind.REGRESSION:
        return [-abs(error) for error in rating_errors(predictions, golds)]
    return [rouge_l for _, rouge_l in rouge_per_example(predictions, golds)]


def count_signs(diffs: Sequence[float]) -> tuple[int, int]:
    """(positive, negative) score differences; a difference within float rounding of 0 is a tie."""
    return sum(d > _TIE for d in diffs), sum(d < -_TIE for d in diffs)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p-value of `wins` against `losses` under "either is equally likely"."""
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be >= 0, got wins={wins}, losses={losses}")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def same_profile(a: Row, b: Row) -> bool:
    """Whether two answers to one query are like for like: not when both read the user's profile (directly
    or through a persona built from it) under different builds of it (`report.load_log` numbers the builds)."""
    specs = [METHODS_BY_NAME.get(r.get("method", "")) for r in (a, b)]
    if not all(spec is not None and spec.needs_profile for spec in specs):
        return True
    return a.get(PROFILE_GENERATION, 1) == b.get(PROFILE_GENERATION, 1)


@dataclass(frozen=True)
class Matchup:
    """The reference method against `method` on the `n` queries both answered under the same profile;
    `profile_mismatch` more were answered by both under different builds of the user's profile, left out."""

    method: str
    n: int
    wins: int
    losses: int
    ties: int
    p_value: float
    profile_mismatch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scored_by_query(task: TaskSpec, rows: Sequence[Row]) -> dict[tuple[str, str], float]:
    """`example_scores` of prediction rows, keyed by (user, query id)."""
    keys = [(r["user"], r["query_id"]) for r in rows]
    predictions = ["" if r["prediction"] is None else str(r["prediction"]) for r in rows]
    return dict(zip(keys, example_scores(task, predictions, [str(r["gold"]) for r in rows]), strict=True))


def head_to_head(
    task: TaskSpec, by_method: Mapping[str, Sequence[Row]], reference: str = REFERENCE
) -> list[Matchup] | None:
    """`reference` against every other method in `by_method` (prediction rows per method, in the order
    given); None when the reference has no rows."""
    if not by_method.get(reference):
        return None
    mine = scored_by_query(task, by_method[reference])
    my_rows = {(r["user"], r["query_id"]): r for r in by_method[reference]}
    matchups = []
    for method, rows in by_method.items():
        if method == reference:
            continue
        theirs = scored_by_query(task, rows)
        their_rows = {(r["user"], r["query_id"]): r for r in rows}
        both = [key for key in mine if key in theirs]
        common = [key for key in both if same_profile(my_rows[key], their_rows[key])]
        diffs = [mine[key] - theirs[key] for key in common]
        wins, losses = count_signs(diffs)
        ties = len(common) - wins - losses
        matchups.append(
            Matchup(method, len(common), wins, losses, ties, sign_test(wins, losses), len(both) - len(common))
        )
    return matchups
