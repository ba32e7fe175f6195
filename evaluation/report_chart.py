"""A run's `results.png`: a horizontal bar per method for the primary metric with its interval."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from persona_agent.evaluation.report_scores import METRIC_TITLES

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
