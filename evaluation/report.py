"""A run's report, rebuilt from its results log alone: `results.json` (every prediction, every setup cost,
the summary), `results.md` (one table, the paper's figures beside ours) and `results.png` (a bar chart).

Rebuilding from the log is what makes an interrupted-and-resumed run report exactly what an uninterrupted
one does (up to wall-clock seconds): the JSON holds no timestamps and lists rows in a fixed order.

While a run is partial, methods have answered different queries (floors finish at once, LM methods user by
user), so their full-run scores are not comparable. The report then also scores every method on the queries
all of them answered (`paired`): that table, and the chart, are the like-for-like comparison.

Beside the means, PersonaAgent meets every other method query by query (`head_to_head`; its planned mode too,
`planned_head_to_head`): wins, losses, ties and a sign test, which say where it gains and where it loses when
the means are close. The other alignment
strategies (GEPA, COPRO) also meet each other (`strategy_head_to_head`). A run of the planned agent also says,
criterion by criterion, whether its goal holds (`goal`, from `goal.goal_check`). Two answers that both
read the user's profile are compared only when made under the same build of it: a resumed run whose `state/`
is gone rebuilds the profile, and the LM may write it differently (`_number_profile_builds`).

Scores are LaMP's official metrics (`metrics.score`); a failed example counts as an empty answer (wrong
label; the farther rating). Intervals are 95% percentile bootstraps over queries with the run's seed
(`report_scores`). `report_markdown` renders `results.md`, `report_chart` draws `results.png`, and
`results_index` gathers every run's headline figures into one page.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persona_agent.core.tasks import MetricKind, TaskSpec
from persona_agent.evaluation.alignment_effect import alignment_effects
from persona_agent.evaluation.errors import EvalLogError
from persona_agent.evaluation.goal import goal_check
from persona_agent.evaluation.head_to_head import PLANNED, PROFILE_GENERATION, REFERENCE, head_to_head
from persona_agent.evaluation.metrics import lower_is_better
from persona_agent.evaluation.persist import ResultLog, Row, latest_rows, write_text_atomic
from persona_agent.evaluation.plan import FORMAT, METHOD_SPECS, METHODS_BY_NAME, method_label, paper_figures, task_setup
from persona_agent.evaluation.report_chart import render_chart
from persona_agent.evaluation.report_markdown import PAPER_NOTE, _p_value, render_markdown
from persona_agent.evaluation.report_scores import CONFIDENCE, N_RESAMPLES, ROUNDED, score_with_intervals

__all__ = [  # the report's parts, importable from here as before the split
    "N_RESAMPLES",
    "ReportFiles",
    "_p_value",
    "build_results",
    "load_log",
    "render_chart",
    "render_markdown",
    "score_with_intervals",
    "write_report",
]


@dataclass(frozen=True)
class ReportFiles:
    results: Path
    markdown: Path
    chart: Path


def _mean(rows: Sequence[Row], key: str) -> float:
    return float(np.mean([r.get(key) or 0 for r in rows])) if rows else 0.0


def _costs(rows: Sequence[Row]) -> dict[str, float]:
    return {
        "calls": _mean(rows, "calls"),
        "prompt_tokens": _mean(rows, "prompt_tokens"),
        "completion_tokens": _mean(rows, "completion_tokens"),
        "tokens": _mean(rows, "prompt_tokens") + _mean(rows, "completion_tokens"),
        "seconds": _mean(rows, "seconds"),
        "lm_seconds": _mean(rows, "lm_seconds"),
    }


def _setup_costs(rows: Sequence[Row]) -> dict[str, Any] | None:
    """Mean costs per build; `builds` exceeds `users` when a resumed run rebuilt a lost set-up."""
    if not rows:
        return None
    return {
        "users": len({r["user"] for r in rows}),
        "builds": len(rows),
        "errors": sum(r.get("error") is not None for r in rows),
        **_costs(rows),
    }


# -- results --------------------------------------------------------------------------------------------


def _number_profile_builds(rows: Sequence[Row]) -> list[Row]:
    """The rows, those that depend on the user's profile tagged with `PROFILE_GENERATION` when it is not 1.

    A user's profile is built once and cached in the run folder's `state/`; a resumed run that finds the
    cache gone builds it again (a new `profile` set-up row), and the local LM need not write the same text
    twice. Rows written after the k-th distinct build of a user's profile were made under build k, so log order
    numbers them, old logs included; a rebuild whose `profile_sha` equals the previous build's is the same
    profile. Rows of the first build stay untagged."""
    builds: dict[str, int] = {}
    digests: dict[str, str | None] = {}
    out = []
    for row in rows:
        user = row.get("user")
        if row.get("kind") == "setup" and row.get("stage") == "profile":
            digest = row.get("profile_sha")
            if user not in builds or digest is None or digest != digests[user]:
                builds[user] = builds.get(user, 0) + 1
            digests[user] = digest
        spec = METHODS_BY_NAME.get(row.get("method", ""))
        reads_profile = row.get("kind") == "setup" or (spec is not None and spec.needs_profile)
        generation = builds.get(user, 1)
        out.append({**row, PROFILE_GENERATION: generation} if reads_profile and generation > 1 else row)
    return out


def load_log(run_dir: Path) -> tuple[Row, list[Row], list[Row]]:
    """(the last meta row, prediction rows, setup rows) of a run folder.

    The last row for each prediction wins (a retried failure replaces the failed row). Every set-up row is
    kept: the runner writes one again only when it recomputed that set-up (its cached copy in `state/` was
    gone), and that work cost LM time beside the first."""
    log = ResultLog(Path(run_dir) / "predictions.jsonl")
    rows = log.load()
    metas = [r for r in rows if r.get("kind") == "meta"]
    if not metas:
        raise EvalLogError(f"{log.path}: no run metadata; is this an evaluation run folder?")
    numbered = _number_profile_builds([r for r in rows if r.get("kind") != "meta"])
    predictions = latest_rows(r for r in numbered if r.get("kind") == "prediction").values()
    return metas[-1], list(predictions), [r for r in numbered if r.get("kind") == "setup"]


def _query_key(row: Row) -> tuple[str, str]:
    return row["user"], row["query_id"]


Scorer = Callable[[Sequence[Row]], dict]


def _ordered(meta: Row, predictions: list[Row], setups: list[Row]) -> tuple[list[Row], list[Row]]:
    """The rows in the report's fixed order: method, user, query (predictions); stage, user (set-ups)."""
    order = {name: i for i, name in enumerate(METHODS_BY_NAME)}
    user_order = {u: i for i, u in enumerate(meta["users"])}
    predictions = sorted(
        (r for r in predictions if r["user"] in user_order),
        key=lambda r: (order.get(r["method"], len(order)), user_order[r["user"]], r["query_index"]),
    )
    setups = sorted(setups, key=lambda r: (r["stage"], user_order.get(r["user"], len(user_order))))
    return predictions, setups


def _paired(by_method: dict[str, list[Row]], scored: Scorer) -> dict[str, Any] | None:
    """Every method scored on the queries all of them answered, when they did not all answer the same ones."""
    answered = [{_query_key(r) for r in rows} for rows in by_method.values()]
    common = set.intersection(*answered) if answered else set()
    if not any(len(keys) != len(common) for keys in answered):
        return None
    return {
        "n_users": len({user for user, _ in common}),
        "n_queries": len(common),
        "metrics": {
            name: scored([r for r in rows if _query_key(r) in common]) if common else None
            for name, rows in by_method.items()
        },
    }


def _summary(
    task: TaskSpec, by_method: dict[str, list[Row]], by_stage: dict[str, list[Row]], expected: int, scored: Scorer
) -> list[dict[str, Any]]:
    """One entry per method that answered, in table order: its scores, the paper's, its costs."""
    summary = []
    for spec in METHOD_SPECS:
        rows = by_method.get(spec.name)
        if not rows:
            continue
        summary.append(
            {
                "method": spec.name,
                "label": method_label(spec, task),
                "group": spec.group,
                "n_users": len({r["user"] for r in rows}),
                "n_queries": len(rows),
                "n_expected": expected,
                "errors": sum(r.get("error") is not None for r in rows),
                "metrics": scored(rows),
                "paper": paper_figures(task, spec.name),
                "per_sample": _costs(rows),
                "alignment_per_user": _setup_costs(by_stage.get(f"align:{spec.alignment_key}", []))
                if spec.persona == "aligned"
                else None,
            }
        )
    return summary


def _comparisons(task: TaskSpec, by_method: dict[str, list[Row]], by_stage: dict[str, list[Row]]) -> dict[str, Any]:
    """Query by query: PersonaAgent (ReAct, and planned) against each method, the other strategies against each
    other, and what alignment did."""
    matchups = head_to_head(task, by_method, REFERENCE)
    planned = head_to_head(task, by_method, PLANNED)
    strategies = _other_strategies(by_method)
    strategy_matchups = (
        head_to_head(task, {name: by_method[name] for name in strategies}, strategies[0])
        if len(strategies) > 1
        else None
    )
    return {
        "head_to_head": None
        if matchups is None
        else {"reference": REFERENCE, "matchups": [m.as_dict() for m in matchups]},
        "planned_head_to_head": None
        if planned is None
        else {"reference": PLANNED, "matchups": [m.as_dict() for m in planned]},
        "strategy_head_to_head": None
        if strategy_matchups is None
        else {"reference": strategies[0], "matchups": [m.as_dict() for m in strategy_matchups]},
        "alignment_effects": [e.as_dict() for e in alignment_effects(task, by_method, by_stage)],
    }


def _totals(predictions: Sequence[Row], setups: Sequence[Row]) -> dict[str, Any]:
    return {
        "examples": len(predictions),
        "errors": sum(r.get("error") is not None for r in predictions),
        "example_seconds": round(sum(r.get("seconds") or 0 for r in predictions), 3),
        "setup_seconds": round(sum(r.get("seconds") or 0 for r in setups), 3),
        "lm_calls": sum(r.get("calls") or 0 for r in predictions) + sum(r.get("calls") or 0 for r in setups),
    }


def build_results(run_dir: Path) -> dict[str, Any]:
    """The results document of a run folder (see the module docstring)."""
    meta, predictions, setups = load_log(run_dir)
    config = meta["config"]
    task = task_setup(config["task"]).task
    seed = int(config["seed"])
    expected_per_method = sum(len(q[: config["queries"]]) for q in meta["queries"].values())
    predictions, setups = _ordered(meta, predictions, setups)
    by_stage: dict[str, list[Row]] = {}
    for row in setups:
        by_stage.setdefault(row["stage"], []).append(row)

    def scored(rows: Sequence[Row]) -> dict:
        preds = ["" if r["prediction"] is None else str(r["prediction"]) for r in rows]
        return score_with_intervals(task, preds, [str(r["gold"]) for r in rows], seed)

    by_method = {spec.name: [r for r in predictions if r["method"] == spec.name] for spec in METHOD_SPECS}
    by_method = {name: rows for name, rows in by_method.items() if rows}
    summary = _summary(task, by_method, by_stage, expected_per_method, scored)
    metric_names = [*task.metric_names, *([ROUNDED] if task.metric_kind is MetricKind.REGRESSION else [])]
    run_path = meta.get("run_dir") or str(run_dir)
    comparisons = _comparisons(task, by_method, by_stage)
    primary = task.metric_names[0]
    goal = goal_check(
        summary,
        by_method,
        comparisons["planned_head_to_head"],
        comparisons["alignment_effects"],
        primary,
        lower_is_better(primary),
    )
    return {
        "format": FORMAT,
        "task": task.name,
        "title": task.title,
        "run": Path(run_path).name,
        "command": meta["command"],
        "report_command": f"persona-agent eval report {shlex.quote(run_path)}",
        "identity": meta["identity"],
        "config": {k: v for k, v in config.items() if k not in ("workers", "align_threads")},
        "dataset": {**meta["dataset"], "eligible_users": meta.get("eligible_users")},
        "users": meta["users"],
        "metrics": metric_names,
        "primary_metric": primary,
        "lower_is_better": {m: lower_is_better(m) for m in metric_names},
        "bootstrap": {"unit": "query", "n_resamples": N_RESAMPLES, "confidence": CONFIDENCE, "seed": seed},
        "complete": all(s["n_queries"] == s["n_expected"] for s in summary) and len(summary) == len(meta["methods"]),
        "summary": summary,
        "paired": _paired(by_method, scored),
        **comparisons,
        "goal": goal,
        "profile_per_user": _setup_costs(by_stage.get("profile", [])),
        "totals": _totals(predictions, setups),
        "paper_note": PAPER_NOTE,
        "setup": setups,
        "predictions": predictions,
    }


def _other_strategies(by_method: dict[str, list[Row]]) -> list[str]:
    """PersonaAgent under each alignment strategy other than its own, in table order. Each user's strategies
    run one after another under one build of the profile, so they pair query by query with each other even
    where a resumed run left them no like-for-like pair with PersonaAgent."""
    reference = METHODS_BY_NAME[REFERENCE]
    return [
        spec.name
        for spec in METHOD_SPECS
        if spec.name in by_method
        and spec.program == reference.program
        and spec.persona == "aligned"
        and spec.strategy != reference.strategy
    ]


# -- files ----------------------------------------------------------------------------------------------


def write_report(run_dir: Path) -> ReportFiles:
    """Write results.json, results.md and results.png into `run_dir` from its predictions.jsonl."""
    run_dir = Path(run_dir)
    results = build_results(run_dir)
    files = ReportFiles(run_dir / "results.json", run_dir / "results.md", run_dir / "results.png")
    write_text_atomic(files.results, json.dumps(results, ensure_ascii=False, indent=1, allow_nan=False) + "\n")
    write_text_atomic(files.markdown, render_markdown(results))
    tmp = run_dir / ".results.png.tmp"
    render_chart(results, tmp)
    tmp.replace(files.chart)
    return files
