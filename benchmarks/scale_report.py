"""The figures of docs/scale.md, computed from the benchmarks' JSON only (so the page cannot drift from a run).

    python benchmarks/scale_report.py            # re-render docs/scale.md from the saved JSON

`bench_scale.py` (and its `--part slots`) call `update_docs` after each run. Each generated section of the page
sits between `<!-- bench_scale:NAME -->` and `<!-- /bench_scale:NAME -->`; `tests/benchmarks` checks the page
against the JSON. The projection to 1M users uses the measured LM calls, prompt tokens, critical-path latencies
and CPU seconds of one compile (the scripted 1-worker run) plus the assumptions stored in the JSON under
`projection` (a hosted call's latency, completion tokens per call, the users and the day).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "scale.md"
PRICED_MODELS = ("gpt-4.1-nano", "gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")
ASSUMPTIONS = {"users": 1_000_000, "seconds": 86_400, "api_call_seconds": 2.0, "completion_tokens_per_call": 150}
SLOTS_COMMAND = "python benchmarks/bench_scale.py --part slots"


def prices(models: tuple[str, ...] = PRICED_MODELS) -> dict[str, list[float]]:
    """USD per million input and output tokens from LiteLLM's bundled cost map (stored in the JSON)."""
    import litellm

    return {
        m: [round(litellm.model_cost[m][k] * 1e6, 4) for k in ("input_cost_per_token", "output_cost_per_token")]
        for m in models
    }


def per_compile(result: dict[str, Any]) -> dict[str, float]:
    """One compile, measured: the local runner's 1-worker run (LM calls, tokens, latencies on its path, CPU)."""
    base = next(r for r in result["runs"] if r["runner"] == "local" and r["workers"] == 1)
    latency = result["latency_seconds"]
    return {
        "lm_calls": base["lm_calls_per_compile"],
        "prompt_tokens": base["prompt_tokens_per_compile"],
        "completion_tokens": base["completion_tokens_per_compile"],
        "latencies": round(60 / base["workers_only_per_minute"] / latency, 2),
        "cpu_seconds": base["cpu_seconds_per_compile"],
    }


def projection(result: dict[str, Any]) -> dict[str, Any]:
    """1M users with an API model: cost per priced model, and the Ray cluster that compiles them in a day."""
    a, one = result["projection"], per_compile(result)
    calls = one["lm_calls"] * a["users"]
    prompt = one["prompt_tokens"] * a["users"]
    completion = {"scripted": one["completion_tokens"] * a["users"], "assumed": a["completion_tokens_per_call"] * calls}
    cost = {
        m: {k: round((prompt * p_in + c * p_out) / 1e6) for k, c in completion.items()}
        for m, (p_in, p_out) in result["prices"].items()
    }
    rate = a["users"] / a["seconds"]
    compile_seconds = one["latencies"] * a["api_call_seconds"]
    commits = statistics.median(
        r["driver_commits_per_second"] for r in result["runs"] if r["driver_commits_per_second"]
    )
    return {
        "per_compile": one,
        "lm_calls": calls,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost_usd": cost,
        "compiles_per_second": round(rate, 2),
        "compile_seconds": round(compile_seconds, 1),
        "in_flight": math.ceil(rate * compile_seconds),
        "busy_cores": math.ceil(rate * one["cpu_seconds"]),
        "lm_calls_per_second": round(rate * one["lm_calls"]),
        "tokens_per_minute": round(
            60 * rate * (one["prompt_tokens"] + a["completion_tokens_per_call"] * one["lm_calls"])
        ),
        "driver_commits_per_second": commits,
        "driver_days": round(a["users"] / commits / 86_400, 1),
    }


def scaling_table(result: dict[str, Any]) -> str:
    head = (
        "| runner | workers | users | workers only: users/min | speedup | efficiency "
        "| end to end: users/min | speedup | efficiency | driver commits/s "
        "| re-compile: users/min | speedup | driver commits/s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = [
        f"| {r['runner']} | {r['workers']} | {r['users']} | {r['workers_only_per_minute']} | {r['workers_speedup']}x "
        f"| {r['workers_efficiency']:.0%} | {r['users_per_minute']} | {r['speedup']}x | {r['efficiency']:.0%} "
        f"| {r['driver_commits_per_second']} | {r.get('recompile_users_per_minute', '-')} "
        f"| {str(r['recompile_speedup']) + 'x' if 'recompile_speedup' in r else '-'} "
        f"| {r.get('recompile_commits_per_second', '-')} |"
        for r in result["runs"]
    ]
    return "\n".join([head, *rows])


def cost_table(result: dict[str, Any]) -> str:
    p, a = projection(result), result["projection"]
    one = p["per_compile"]
    lines = [
        f"A default compile made **{one['lm_calls']:g} LM calls** with **{one['prompt_tokens']:,.0f} prompt tokens** "
        f"(~{one['prompt_tokens'] / one['lm_calls']:,.0f} a call) and {one['completion_tokens']:,.0f} completion "
        f"tokens (scripted answers are short; a real model's are taken as {a['completion_tokens_per_call']} a call).",
        "",
        "| 1M compiles | LM calls | input tokens | output tokens | "
        + " | ".join(f"{m} (${i:g}/${o:g} per 1M)" for m, (i, o) in result["prices"].items())
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(result["prices"]),
    ]
    for kind, label in (
        ("scripted", "scripted completions"),
        ("assumed", f"~{a['completion_tokens_per_call']}-token completions"),
    ):
        costs = " | ".join(f"${p['cost_usd'][m][kind]:,}" for m in result["prices"])
        lines.append(
            f"| {label} | {p['lm_calls'] / 1e6:g}M | {p['prompt_tokens'] / 1e9:.2f}B "
            f"| {p['completion_tokens'][kind] / 1e9:.2f}B | {costs} |"
        )
    return "\n".join(lines)


def cluster_table(result: dict[str, Any]) -> str:
    p, a = projection(result), result["projection"]
    one = p["per_compile"]
    rows = [
        ("compiles per second (1M in a day)", f"{p['compiles_per_second']}"),
        ("LM latencies on a compile's path (measured)", f"{one['latencies']}"),
        (f"seconds a compile at {a['api_call_seconds']:g} s a call", f"{p['compile_seconds']}"),
        ("compiles in flight (`--workers`)", f"{p['in_flight']}"),
        ("CPU seconds a compile, workers' own work (measured)", f"{one['cpu_seconds']}"),
        ("busy cores", f"{p['busy_cores']}"),
        ("LM calls per second", f"{p['lm_calls_per_second']:,}"),
        ("tokens per minute", f"{p['tokens_per_minute']:,}"),
        (
            "driver commits per second, median of the runs (DuckDB; MLflow in tracking processes)",
            f"{p['driver_commits_per_second']}",
        ),
        ("days of commits for 1M at that rate", f"{p['driver_days']}"),
    ]
    return "\n".join(["| quantity | value |", "|---|---:|", *(f"| {k} | {v} |" for k, v in rows)])


def slots_table(slots: dict[str, Any] | None) -> str:
    """Prompt-heavy and generation-heavy side by side per slot count (the real local model's run)."""
    if slots is None:
        return f"Not measured yet: `{SLOTS_COMMAND}` (the real local model, minutes) writes it."
    by = {(r["slots"], r["kind"]): r for r in slots["runs"]}
    head = (
        "| slots | prompt-heavy calls/s | tokens/s | cached prompt tokens | speedup | generation-heavy calls/s "
        "| generated tokens/s | speedup |\n|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    rows = []
    for n in sorted({r["slots"] for r in slots["runs"]}):
        p, g = by[(n, "prompt_heavy")], by[(n, "generation_heavy")]
        rows.append(
            f"| {n} | {p['calls_per_second']} | {p['tokens_per_second']} | {p['cached_prompt_tokens']:,} "
            f"| {p['speedup']}x | {g['calls_per_second']} "
            f"| {g['generated_tokens_per_second']} | {g['speedup']}x |"
        )
    return "\n".join([head, *rows])


def sections(scale: dict[str, Any], slots: dict[str, Any] | None) -> dict[str, str]:
    return {
        "scaling": scaling_table(scale),
        "cost": cost_table(scale),
        "cluster": cluster_table(scale),
        "slots": slots_table(slots),
    }


def render(text: str, parts: dict[str, str]) -> str:
    """The page with each generated section replaced (the markers must be there)."""
    for name, body in parts.items():
        pattern = re.compile(rf"(<!-- bench_scale:{name} -->\n)(?:.*?\n)?(<!-- /bench_scale:{name} -->)", re.S)
        if not pattern.search(text):
            raise ValueError(f"docs/scale.md has no bench_scale:{name} section")
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    return text


def load(name: str, results: Path = RESULTS) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def update_docs(results: Path = RESULTS, docs: Path = DOCS) -> None:
    scale = load("bench_scale", results)
    if scale is None:
        raise FileNotFoundError(results / "bench_scale.json")
    docs.write_text(render(docs.read_text(encoding="utf-8"), sections(scale, load("bench_slots", results))))


if __name__ == "__main__":
    update_docs()
    print(f"rendered {DOCS}")
