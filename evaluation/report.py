"""A run's report, rebuilt from its results log alone: `results.json` (every prediction, every setup cost,
the summary), `results.md` (one table, the paper's figures beside ours) and `results.png` (a bar chart).

Rebuilding from the log is what makes an interrupted-and-resumed run report exactly what an uninterrupted
one does (up to wall-clock seconds): the JSON holds no timestamps and lists rows in a fixed order.

While a run is partial, methods have answered different queries (floors finish at once, LM methods user by
user), so their full-run scores are not comparable. The report then also scores every method on the queries
all of them answered (`paired`): that table, and the chart, are the like-for-like comparison.

Beside the means, PersonaAgent meets every other method query by query (`head_to_head`): wins, losses, ties
and a sign test, which say where it gains and where it loses when the means are close. The other alignment
strategies (GEPA, COPRO) also meet each other (`strategy_head_to_head`). Two answers that both
read the user's profile are compared only when made under the same build of it: a resumed run whose `state/`
is gone rebuilds the profile, and the LM may write it differently (`_number_profile_builds`).

Scores are LaMP's official metrics (`metrics.score`); a failed example counts as an empty answer (wrong
label; the farther rating). Intervals are 95% percentile bootstraps over queries with the run's seed; the
macro-F1 and RMSE resamples are vectorized here (the same draws as `intervals.bootstrap_interval`, which
recomputes the metric in Python per resample and takes seconds per method at a few hundred queries).
"""

from __future__ import annotations

import json
import shlex
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from persona_agent.core.tasks import MetricKind, TaskSpec
from persona_agent.evaluation.alignment_effect import UNALIGNED, alignment_effects
from persona_agent.evaluation.errors import EvalLogError
from persona_agent.evaluation.floors import round_rating
from persona_agent.evaluation.head_to_head import PROFILE_GENERATION, REFERENCE, head_to_head
from persona_agent.evaluation.intervals import bootstrap_mean_interval
from persona_agent.evaluation.metrics import label_index, lower_is_better, rating_value, rouge_per_example, score
from persona_agent.evaluation.persist import ResultLog, Row, latest_rows, write_text_atomic
from persona_agent.evaluation.plan import FORMAT, METHOD_SPECS, METHODS_BY_NAME, method_label, paper_figures, task_setup

N_RESAMPLES = 1000
CONFIDENCE = 0.95
ROUNDED = "accuracy (rounded)"
METRIC_TITLES = {"accuracy": "accuracy", "f1": "macro-F1", "MAE": "MAE", "RMSE": "RMSE", ROUNDED: ROUNDED}
PAPER_NOTE = (
    "Paper: Zhang et al., PersonaAgent (arXiv 2506.06254), Claude-3.5 Sonnet on LaMP's own data, 100 users with "
    "the longest histories; shown for reference, not as a like-for-like comparison (other data, users and LM)."
)


@dataclass(frozen=True)
class ReportFiles:
    results: Path
    markdown: Path
    chart: Path


# -- scoring --------------------------------------------------------------------------------------------


def _interval(estimate: float, samples: np.ndarray) -> dict[str, float]:
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(samples, [alpha, 1 - alpha])
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def _draws(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(N_RESAMPLES, n))


def macro_f1_resamples(pred_ids: np.ndarray, gold_ids: np.ndarray, n_labels: int, draws: np.ndarray) -> np.ndarray:
    """Macro-F1 (over every label, zero when a label has no true positive) of each resample, vectorized."""
    p, g = pred_ids[draws], gold_ids[draws]
    total = np.zeros(draws.shape[0])
    for label in range(n_labels):
        tp = ((p == label) & (g == label)).sum(axis=1)
        fp = ((p == label) & (g != label)).sum(axis=1)
        fn = ((p != label) & (g == label)).sum(axis=1)
        denominator = 2 * tp + fp + fn
        total += np.where(tp > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
    return total / n_labels


def score_with_intervals(task: TaskSpec, predictions: Sequence[str], golds: Sequence[str], seed: int) -> dict:
    """Each metric of `task` (plus rounded accuracy for ratings) as {estimate, low, high}."""
    official = score(task, predictions, golds)
    draws = _draws(len(golds), seed)
    out: dict[str, dict[str, float]] = {}
    if task.metric_kind is MetricKind.CLASSIFICATION:
        pred_ids = np.array([label_index(p, task.labels) for p in predictions])
        gold_ids = np.array([label_index(g, task.labels) for g in golds])
        correct = (pred_ids == gold_ids).astype(float)
        out["accuracy"] = _interval(official["accuracy"], correct[draws].mean(axis=1))
        out["f1"] = _interval(official["f1"], macro_f1_resamples(pred_ids, gold_ids, len(task.labels), draws))
    elif task.metric_kind is MetricKind.REGRESSION:
        errors = np.array([rating_value(p, g) - float(g) for p, g in zip(predictions, golds, strict=True)])
        out["MAE"] = _interval(official["MAE"], np.abs(errors)[draws].mean(axis=1))
        out["RMSE"] = _interval(official["RMSE"], np.sqrt((errors**2)[draws].mean(axis=1)))
        hits = [float(round_rating(p) == str(g).strip()) for p, g in zip(predictions, golds, strict=True)]
        rounded = bootstrap_mean_interval(hits, n_resamples=N_RESAMPLES, confidence=CONFIDENCE, seed=seed)
        out[ROUNDED] = {"estimate": rounded.estimate, "low": rounded.low, "high": rounded.high}
    else:
        per = np.array(rouge_per_example(predictions, golds))
        out["rouge-1"] = _interval(official["rouge-1"], per[:, 0][draws].mean(axis=1))
        out["rouge-L"] = _interval(official["rouge-L"], per[:, 1][draws].mean(axis=1))
    return out


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


def build_results(run_dir: Path) -> dict[str, Any]:
    """The results document of a run folder (see the module docstring)."""
    meta, predictions, setups = load_log(run_dir)
    config = meta["config"]
    task = task_setup(config["task"]).task
    seed = int(config["seed"])
    users = meta["users"]
    queries = meta["queries"]
    expected_per_method = sum(len(q[: config["queries"]]) for q in queries.values())
    order = {name: i for i, name in enumerate(METHODS_BY_NAME)}
    user_order = {u: i for i, u in enumerate(users)}
    predictions = sorted(
        (r for r in predictions if r["user"] in user_order),
        key=lambda r: (order.get(r["method"], len(order)), user_order[r["user"]], r["query_index"]),
    )
    setups = sorted(setups, key=lambda r: (r["stage"], user_order.get(r["user"], len(user_order))))
    by_stage: dict[str, list[Row]] = {}
    for row in setups:
        by_stage.setdefault(row["stage"], []).append(row)

    def scored(rows: Sequence[Row]) -> dict:
        preds = ["" if r["prediction"] is None else str(r["prediction"]) for r in rows]
        return score_with_intervals(task, preds, [str(r["gold"]) for r in rows], seed)

    by_method = {spec.name: [r for r in predictions if r["method"] == spec.name] for spec in METHOD_SPECS}
    by_method = {name: rows for name, rows in by_method.items() if rows}
    answered = [{_query_key(r) for r in rows} for rows in by_method.values()]
    common = set.intersection(*answered) if answered else set()
    paired = None
    if any(len(keys) != len(common) for keys in answered):
        paired = {
            "n_users": len({user for user, _ in common}),
            "n_queries": len(common),
            "metrics": {
                name: scored([r for r in rows if _query_key(r) in common]) if common else None
                for name, rows in by_method.items()
            },
        }

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
                "n_expected": expected_per_method,
                "errors": sum(r.get("error") is not None for r in rows),
                "metrics": scored(rows),
                "paper": paper_figures(task, spec.name),
                "per_sample": _costs(rows),
                "alignment_per_user": _setup_costs(by_stage.get(f"align:{spec.strategy}", []))
                if spec.persona == "aligned"
                else None,
            }
        )
    matchups = head_to_head(task, by_method, REFERENCE)
    strategies = _other_strategies(by_method)
    strategy_matchups = (
        head_to_head(task, {name: by_method[name] for name in strategies}, strategies[0])
        if len(strategies) > 1
        else None
    )
    effects = alignment_effects(task, by_method, by_stage)
    metric_names = [*task.metric_names, *([ROUNDED] if task.metric_kind is MetricKind.REGRESSION else [])]
    run_path = meta.get("run_dir") or str(run_dir)
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
        "users": users,
        "metrics": metric_names,
        "primary_metric": task.metric_names[0],
        "lower_is_better": {m: lower_is_better(m) for m in metric_names},
        "bootstrap": {"unit": "query", "n_resamples": N_RESAMPLES, "confidence": CONFIDENCE, "seed": seed},
        "complete": all(s["n_queries"] == s["n_expected"] for s in summary) and len(summary) == len(meta["methods"]),
        "summary": summary,
        "paired": paired,
        "head_to_head": None
        if matchups is None
        else {"reference": REFERENCE, "matchups": [m.as_dict() for m in matchups]},
        "strategy_head_to_head": None
        if strategy_matchups is None
        else {"reference": strategies[0], "matchups": [m.as_dict() for m in strategy_matchups]},
        "alignment_effects": [e.as_dict() for e in effects],
        "profile_per_user": _setup_costs(by_stage.get("profile", [])),
        "totals": {
            "examples": len(predictions),
            "errors": sum(r.get("error") is not None for r in predictions),
            "example_seconds": round(sum(r.get("seconds") or 0 for r in predictions), 3),
            "setup_seconds": round(sum(r.get("seconds") or 0 for r in setups), 3),
            "lm_calls": sum(r.get("calls") or 0 for r in predictions) + sum(r.get("calls") or 0 for r in setups),
        },
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


# -- markdown -------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ci(interval: dict[str, float]) -> str:
    return f"{interval['estimate']:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _p_value(p: float) -> str:
    """Three decimals, but never `0.000`: an exact sign test's p is positive, however small."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def render_markdown(results: dict[str, Any]) -> str:
    """The run's table with the paper's figures beside it, its settings and how to reproduce it."""
    task = task_setup(results["task"]).task
    config = results["config"]
    metrics = results["metrics"]
    paper_metrics = list(task.metric_names)

    def title(metric: str) -> str:
        return METRIC_TITLES.get(metric, metric) + (" ↓" if results["lower_is_better"].get(metric) else "")

    head = [
        "method",
        *[f"{title(m)} [95% CI]" for m in metrics],
        *[f"paper {METRIC_TITLES.get(m, m)}" for m in paper_metrics],
        "users",
        "queries",
        "errors",
        "LM calls / sample",
        "tokens / sample",
        "s / sample",
        "alignment LM calls / user",
        "alignment s / user",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---", *["---:"] * (len(head) - 1)]) + "|"]
    for s in results["summary"]:
        cost, align = s["per_sample"], s["alignment_per_user"]
        queries = str(s["n_queries"]) + ("" if s["n_queries"] == s["n_expected"] else f" of {s['n_expected']}")
        cells = [
            s["label"],
            *[_ci(s["metrics"][m]) for m in metrics],
            *[_fmt(s["paper"].get(m)) for m in paper_metrics],
            str(s["n_users"]),
            queries,
            str(s["errors"]),
            _num(cost["calls"]),
            _num(cost["tokens"]),
            f"{cost['seconds']:.2f}",
            _num(align["calls"]) if align else "—",
            f"{align['seconds']:.1f}" if align else "—",
        ]
        lines.append("| " + " | ".join(cells) + " |")

    paired_lines = [
        *_paired_table(results, title),
        *_head_to_head_table(results, task),
        *_head_to_head_table(results, task, "strategy_head_to_head"),
        *_alignment_effect_table(results),
    ]

    data = results["dataset"]
    profile = results["profile_per_user"]
    totals = results["totals"]
    n_users = len(results["users"])
    status = (
        "complete" if results["complete"] else "PARTIAL (a run in progress or interrupted; rerun the command to resume)"
    )
    notes = [
        f"- Data: {data.get('source')}; {data.get('eligible_users')} eligible users (>= {config['align_n']} items "
        f"before their first query), {n_users} sampled with seed {config['seed']}; each user's latest "
        f"{config['queries']} items are the queries, and the memory holds only what precedes the first one.",
        f"- LM `{config['lm']}`; K = {config['k']} retrieved items; at most {config['max_iters']} tool calls per "
        f"answer; alignment once per user on the {config['align_n']} items before the first query "
        f"(PersonaAligner: {config['align_iterations']} iteration(s)), every strategy under a budget of "
        f"{config['align_budget']} LM calls per user.",
        "- Floors use no LM: the user's majority label (LaMP-3: their mean rating, scored as is and rounded only "
        "in the rounded-accuracy column; and their median rating, a whole star: the constant with the least "
        "absolute error on their past ratings) and the label of the memory item nearest the query by embedding.",
        f"- {PAPER_NOTE}",
        f"- Intervals: 95% percentile bootstrap over queries ({N_RESAMPLES} resamples, seed {config['seed']}); "
        "a user's queries are not independent, so read them as optimistic.",
        "- Costs per sample exclude per-user set-up: "
        + (
            f"the semantic-memory profile took {_num(profile['calls'])} LM calls and {profile['seconds']:.1f} s per "
            + (
                f"build ({profile['errors']} failed; {profile['builds']} builds for {profile['users']} users: a "
                "resumed run rebuilds a profile whose cached copy in `state/` is gone)"
                if profile["builds"] > profile["users"]
                else f"user ({profile['errors']} failed)"
            )
            if profile
            else "no profile was built"
        )
        + "; alignment is in its own columns (no_memory and no_action reuse the PersonaAligner persona). "
        "Seconds are wall time (with several workers on the in-process model they include waiting for it).",
        f"- Status: {status}; {totals['examples']} examples, {totals['errors']} failed; LM time "
        f"{_hours(totals['example_seconds'])} answering + {_hours(totals['setup_seconds'])} set-up; "
        f"{totals['lm_calls']:,} LM calls.",
    ]
    return "\n".join(
        [
            f"# {task.name}: {task.title}",
            "",
            f"Run `{results['run']}`: {n_users} users, up to {config['queries']} queries each.",
            "",
            *lines,
            "",
            *paired_lines,
            *notes,
            "",
            "Reproduce (resumes where it stopped if rerun):",
            "",
            f"    {results['command']}",
            "",
            "Rebuild `results.json`, `results.md` and `results.png` from `predictions.jsonl`:",
            "",
            f"    {results['report_command']}",
            "",
        ]
    )


def _paired_table(results: dict[str, Any], title: Callable[[str], str]) -> list[str]:
    """While a run is partial: every method on the queries all of them answered (empty when complete)."""
    paired = results.get("paired")
    if not paired:
        return []
    if not paired["n_queries"]:
        return ["No query has been answered by every method yet: the table above compares different queries.", ""]
    metrics = results["metrics"]
    lines = [
        f"Like for like while the run is partial: every method on the {paired['n_queries']} queries of "
        f"{paired['n_users']} user{'' if paired['n_users'] == 1 else 's'} that all of them answered.",
        "",
        "| method | " + " | ".join(f"{title(m)} [95% CI]" for m in metrics) + " |",
        "|" + "|".join(["---", *["---:"] * len(metrics)]) + "|",
    ]
    for s in results["summary"]:
        scores = paired["metrics"][s["method"]]
        lines.append("| " + " | ".join([s["label"], *[_ci(scores[m]) for m in metrics]]) + " |")
    return [*lines, ""]


def _head_to_head_table(results: dict[str, Any], task: TaskSpec, key: str = "head_to_head") -> list[str]:
    """The `key` reference (PersonaAgent, or the first other strategy) against each method, query by query."""
    h2h = results.get(key)
    if not h2h:
        return []
    labels = {s["method"]: s["label"] for s in results["summary"]}
    better = {
        MetricKind.CLASSIFICATION: "right where the other is wrong",
        MetricKind.REGRESSION: "a smaller rating error",
    }.get(task.metric_kind, "a higher ROUGE-L")
    reference = labels[h2h["reference"]]
    lines = [
        f"{reference} against each method, query by query, on the queries both answered: a win is {better}, "
        "a loss the reverse; p is the two-sided exact sign test on wins against losses (ties left out).",
        "",
        f"| {reference} vs | queries | wins | losses | ties | sign test p |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in h2h["matchups"]:
        cells = [labels[m["method"]], str(m["n"]), str(m["wins"]), str(m["losses"]), str(m["ties"])]
        lines.append("| " + " | ".join([*cells, _p_value(m["p_value"])]) + " |")
    return [*lines, "", *_profile_mismatch_note(h2h["matchups"], labels, f"{reference} vs each method")]


def _profile_mismatch_note(entries: Sequence[dict[str, Any]], labels: dict[str, str], table: str) -> list[str]:
    """Say which comparisons in `table` left out queries answered under different builds of a user's profile."""
    left_out = [
        f"{labels.get(e['method'], e['method'])} {e['profile_mismatch']}" for e in entries if e.get("profile_mismatch")
    ]
    if not left_out:
        return []
    return [
        f"Left out of the {table} table (queries both answered, but under different builds of the user's profile, "
        "rebuilt when a resumed run found the run folder's `state/` gone): " + ", ".join(left_out) + ".",
        "",
    ]


def _alignment_effect_table(results: dict[str, Any]) -> list[str]:
    """Per alignment strategy: personas changed, how alignment stopped, answers changed (`alignment_effect`)."""
    effects = results.get("alignment_effects")
    if not effects:
        return []
    labels = {s["method"]: s["label"] for s in results["summary"]}
    unaligned = labels.get(UNALIGNED, UNALIGNED)
    lines = [
        f"What alignment did: personas it changed (of the users aligned), how each alignment stopped, and, on the "
        f"queries both answered, the answers that differ from {unaligned} (the same agent under the unaligned "
        "persona) and whether they scored better or worse.",
        "",
        "| method | users aligned | personas changed | failed | stopped by | queries | answers changed | better | worse |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for e in effects:
        stops = ", ".join(f"{reason} × {n}" for reason, n in e["stop_reasons"].items()) or "—"
        cells = [labels.get(e["method"], e["method"]), str(e["users"]), str(e["personas_changed"]), str(e["failed"])]
        counts = [str(e[k]) for k in ("queries", "answers_changed", "better", "worse")]
        lines.append("| " + " | ".join([*cells, stops, *counts]) + " |")
    mismatch = _profile_mismatch_note(effects, labels, "what alignment did")
    return [*lines, "", *mismatch, *_persona_check_note(effects, labels)]


def _persona_check_note(effects: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """The evaluation runs GEPA/COPRO as published (`constrain=False`): how many of their personas fail the checks."""
    checked = [e for e in effects if e.get("personas_checked")]
    if not checked:
        return []
    parts = [
        f"{labels.get(e['method'], e['method'])} {e['personas_flagged']} of {e['personas_checked']}" for e in checked
    ]
    return [
        "Personas that fail PersonaAligner's constraints (sections, template variables, length cap; the "
        "`persona_check` of each alignment row that records it, flagged of checked): " + "; ".join(parts) + ".",
        "",
    ]


# -- chart ----------------------------------------------------------------------------------------------

GROUP_COLORS = {"floor": "#9e9e9e", "baseline": "#4c72b0", "ablation": "#8172b2", "persona_agent": "#dd8452"}


def render_chart(results: dict[str, Any], path: Path) -> None:
    """A horizontal bar per method for the primary metric with its interval, the paper's value as a marker."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = results["primary_metric"]
    paired = results.get("paired")
    like_for_like = bool(paired and paired["n_queries"])
    summary = [{**s, "metrics": paired["metrics"][s["method"]]} if like_for_like else s for s in results["summary"]]
    fig = Figure(figsize=(9, 1.9 + 0.42 * max(1, len(summary))), dpi=110)
    FigureCanvasAgg(fig)  # Agg explicitly: no display, no pyplot global state
    ax = fig.add_subplot()
    ys = np.arange(len(summary))
    values = np.array([s["metrics"][metric]["estimate"] for s in summary])
    errors = np.array(
        [
            [s["metrics"][metric]["estimate"] - s["metrics"][metric]["low"] for s in summary],
            [s["metrics"][metric]["high"] - s["metrics"][metric]["estimate"] for s in summary],
        ]
    ).clip(min=0)
    colors = [GROUP_COLORS.get(s["group"], "#4c72b0") for s in summary]
    ax.barh(ys, values, xerr=errors, color=colors, capsize=3, error_kw={"elinewidth": 1, "ecolor": "#333333"})
    for y, s in zip(ys, summary, strict=True):
        ax.text(s["metrics"][metric]["high"], y, f" {s['metrics'][metric]['estimate']:.3f}", va="center", fontsize=8)
        if metric in s["paper"]:
            ax.plot(s["paper"][metric], y, marker="D", color="black", markersize=5, linestyle="none")
    ax.plot([], [], marker="D", color="black", linestyle="none", label="paper (Claude-3.5 Sonnet, LaMP)")
    ax.set_yticks(ys, [s["label"] for s in summary], fontsize=8)
    ax.invert_yaxis()
    better = "lower is better" if results["lower_is_better"].get(metric) else "higher is better"
    ax.set_xlabel(f"{METRIC_TITLES.get(metric, metric)} ({better}; bars: 95% bootstrap interval)")
    reach = [s["metrics"][metric]["high"] for s in summary] + [
        s["paper"][metric] for s in summary if metric in s["paper"]
    ]
    ax.set_xlim(0, (max(reach, default=0.0) or 1.0) * 1.15)
    if like_for_like:
        scope = f"partial run: the {paired['n_queries']} queries of {paired['n_users']} users every method answered"
    else:
        scope = f"{len(results['users'])} users, {max((s['n_queries'] for s in summary), default=0)} queries"
    title = f"{results['task']}: {results['title']} — {scope}, LM {results['config']['lm']}"
    ax.set_title(textwrap.fill(title, 100), fontsize=10)  # a partial run's scope makes it long
    ax.legend(loc="lower right", fontsize=7)
    ax.grid(axis="x", alpha=0.3)
    footer = textwrap.fill("reproduce: " + results["command"], 180)
    fig.text(0.01, 0.005, footer, fontsize=5.5, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.03 * (footer.count("\n") + 1), 1, 1))
    metadata = {"Title": f"{results['task']} {results['run']}", "Description": results["command"]}
    fig.savefig(path, format="png", metadata={**metadata, "Software": "persona-agent"})


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
