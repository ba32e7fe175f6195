"""The planned agent's goal check: each criterion decided from the run's own rows, the verdict all of them."""

from __future__ import annotations

import pytest

from persona_agent.evaluation.goal import GoalThresholds, goal_check, median_costs


def _entry(method: str, group: str, accuracy: float) -> dict:
    return {"method": method, "label": method, "group": group, "metrics": {"accuracy": {"estimate": accuracy}}}


SUMMARY = [
    _entry("majority", "floor", 0.70),
    _entry("vote", "floor", 0.80),
    _entry("rag", "baseline", 0.78),
    _entry("planned_no_alignment", "ablation", 0.84),
    _entry("planned", "persona_agent", 0.86),
]


def _rows(n: int, calls: int = 1, seconds: float = 5.0) -> list[dict]:
    return [{"calls": calls, "seconds": seconds} for _ in range(n)]


def _h2h(**wins_losses: tuple[int, int, float]) -> dict:
    matchups = [
        {"method": m, "n": 300, "wins": w, "losses": lo, "ties": 300 - w - lo, "p_value": p}
        for m, (w, lo, p) in wins_losses.items()
    ]
    return {"reference": "planned", "matchups": matchups}


def _effect(better: int, worse: int, p: float) -> list[dict]:
    return [
        {
            "method": "planned",
            "queries": 300,
            "answers_changed": better + worse,
            "better": better,
            "worse": worse,
            "p_value": p,
        }
    ]


def _check(by_method=None, h2h=None, effects=None, thresholds=None):
    by_method = by_method or {"planned": _rows(300), "planned_no_alignment": _rows(300, seconds=9.0)}
    h2h = h2h or _h2h(majority=(60, 5, 1e-12), vote=(30, 10, 0.002), rag=(25, 8, 0.004))
    effects = effects if effects is not None else _effect(12, 3, 0.035)
    return goal_check(SUMMARY, by_method, h2h, effects, "accuracy", False, thresholds or GoalThresholds())


def _criteria(goal: dict) -> dict[str, bool]:
    return {c["name"]: c["met"] for c in goal["criteria"]}


def test_every_criterion_holds_and_the_goal_is_met():
    goal = _check()
    assert goal["met"] and all(_criteria(goal).values())
    assert goal["best_floor"] == "vote"  # the floor with the best accuracy, not the first
    measured = {c["name"]: c["measured"] for c in goal["criteria"]}
    assert measured["beats best floor"] == "vote: 30 wins, 10 losses, 260 ties of 300, p = 0.002"
    # seconds: the larger median of the aligned agent and its unaligned twin (its cache-cold first answer)
    assert measured["median seconds"].startswith("9.0 s per answer (aligned 5.0, unaligned 9.0")


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"by_method": {"planned": _rows(299), "planned_no_alignment": _rows(299)}}, "queries"),
        ({"h2h": _h2h(majority=(60, 5, 1e-12), vote=(30, 20, 0.2), rag=(25, 8, 0.004))}, "beats best floor"),
        ({"h2h": _h2h(majority=(60, 5, 1e-12), vote=(30, 10, 0.002), rag=(8, 25, 0.004))}, "beats RAG"),
        ({"h2h": _h2h(majority=(60, 5, 1e-12), vote=(30, 10, 0.002))}, "beats RAG"),  # RAG not run
        ({"by_method": {"planned": _rows(300, calls=2), "planned_no_alignment": _rows(300)}}, "median LM calls"),
        ({"by_method": {"planned": _rows(300), "planned_no_alignment": _rows(300, seconds=16.0)}}, "median seconds"),
        ({"effects": _effect(3, 3, 1.0)}, "alignment helps"),  # no net effect
        ({"effects": []}, "alignment helps"),  # alignment not run
    ],
)
def test_one_failing_criterion_fails_the_goal(change, failing):
    goal = _check(**change)
    criteria = _criteria(goal)
    assert not goal["met"] and [name for name, met in criteria.items() if not met] == [failing]


def test_no_goal_without_the_planned_agent():
    assert goal_check(SUMMARY, {"rag": _rows(3)}, None, [], "accuracy", False) is None


def test_lower_is_better_picks_the_floor_with_the_smallest_error():
    summary = [
        {"method": "mean", "label": "mean", "group": "floor", "metrics": {"mae": {"estimate": 0.6}}},
        {"method": "median", "label": "median", "group": "floor", "metrics": {"mae": {"estimate": 0.5}}},
    ]
    goal = goal_check(summary, {"planned": _rows(3)}, _h2h(median=(2, 0, 0.5)), [], "mae", True)
    assert goal["best_floor"] == "median"


def test_median_costs():
    rows = [{"calls": 1, "seconds": 2.0}, {"calls": 4, "seconds": 90.0}, {"calls": 1, "seconds": 3.0}]
    assert median_costs(rows) == {"calls": 1.0, "seconds": 3.0}
    assert median_costs([]) == {"calls": 0.0, "seconds": 0.0}
