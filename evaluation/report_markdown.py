"""A run's `results.md`, rendered from its results document (`report.build_results`): the table with the
paper's figures beside ours, the like-for-like table of a partial run, the head-to-head and alignment tables,
the run's settings and how to reproduce it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from persona_agent.core.tasks import MetricKind, TaskSpec
from persona_agent.evaluation.alignment_effect import UNALIGNED
from persona_agent.evaluation.plan import task_setup
from persona_agent.evaluation.report_scores import METRIC_TITLES, N_RESAMPLES

PAPER_NOTE = (
    "Paper: Zhang et al., PersonaAgent (arXiv 2506.06254), Claude-3.5 Sonnet on LaMP's own data, 100 users with "
    "the longest histories; shown for reference, not as a like-for-like comparison (other data, users and LM)."
)


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
    n_users = len(results["users"])

    def title(metric: str) -> str:
        return METRIC_TITLES.get(metric, metric) + (" ↓" if results["lower_is_better"].get(metric) else "")

    lines = _main_table(results, task, title)
    paired_lines = [
        *_goal_table(results),
        *_paired_table(results, title),
        *_head_to_head_table(results, task),
        *_head_to_head_table(results, task, "planned_head_to_head"),
        *_head_to_head_table(results, task, "strategy_head_to_head"),
        *_alignment_effect_table(results),
    ]

    notes = _notes(results)
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


def _main_table(results: dict[str, Any], task: TaskSpec, title: Callable[[str], str]) -> list[str]:
    """Every method: its scores with intervals, the paper's figures, its queries and costs."""
    metrics = results["metrics"]
    paper_metrics = list(task.metric_names)
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

    return lines


def _notes(results: dict[str, Any]) -> list[str]:
    """The run's data, settings, floors, intervals, costs and status, one bullet each."""
    config = results["config"]
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
    return notes


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


def _goal_table(results: dict[str, Any]) -> list[str]:
    """The planned agent's goal, criterion by criterion (`goal`), when it ran."""
    goal = results.get("goal")
    if not goal:
        return []
    t = goal["thresholds"]
    verdict = "met" if goal["met"] else "not met"
    lines = [
        f"Goal check of the planned agent: **{verdict}**. It must answer at least {t['min_queries']} queries, beat the "
        f"best no-LM floor and RAG query by query (more wins than losses, sign test p < {t['alpha']:g}), take at "
        f"most {t['max_median_calls']:g} LM calls and {t['max_median_seconds']:g} s per answer (medians), and its "
        "alignment must change more answers for the better than for the worse.",
        "",
        "| criterion | met | measured |",
        "|---|---|---|",
    ]
    for c in goal["criteria"]:
        lines.append(f"| {c['name']} | {'yes' if c['met'] else 'no'} | {c['measured']} |")
    return [*lines, ""]


def _head_to_head_table(results: dict[str, Any], task: TaskSpec, key: str = "head_to_head") -> list[str]:
    """The `key` reference (PersonaAgent, its planned mode, or the first other strategy) against each method,
    query by query."""
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
        f"What alignment did: personas it changed (of the users aligned), the planned agent's evidence weights it "
        "changed, how each alignment stopped, and, on the "
        f"queries both answered, the answers that differ from the same agent uncompiled ({unaligned}; for the "
        "planned agent, planned w/o alignment) and whether they scored better or worse, with the two-sided sign "
        "test's p.",
        "",
        "| method | users aligned | personas changed | evidence weights changed | failed | stopped by | queries "
        "| answers changed | better | worse | p |",
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for e in effects:
        stops = ", ".join(f"{reason} × {n}" for reason, n in e["stop_reasons"].items()) or "—"
        cells = [
            labels.get(e["method"], e["method"]),
            str(e["users"]),
            str(e["personas_changed"]),
            _weights_changed(e),
            str(e["failed"]),
        ]
        counts = [str(e[k]) for k in ("queries", "answers_changed", "better", "worse")]
        counts.append(f"{e['p_value']:.3f}" if "p_value" in e else "—")
        lines.append("| " + " | ".join([*cells, stops, *counts]) + " |")
    mismatch = _profile_mismatch_note(effects, labels, "what alignment did")
    return [*lines, "", *mismatch, *_persona_check_note(effects, labels)]


def _weights_changed(effect: dict[str, Any]) -> str:
    """How many alignments changed the evidence weights, of those whose set-up row says ("—": none says)."""
    recorded = effect.get("weights_recorded", 0)
    if not recorded:
        return "—"
    changed = str(effect.get("weights_changed", 0))
    return changed if recorded == effect["users"] else f"{changed} of {recorded} recorded"


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
