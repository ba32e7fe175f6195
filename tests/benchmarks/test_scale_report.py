"""docs/scale.md's figures are the benchmark JSON's: the page matches a render of the saved results, and the
1M-user projection is the measured per-compile figures times the stored assumptions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _scale_report():
    path = ROOT / "benchmarks" / "scale_report.py"
    spec = importlib.util.spec_from_file_location("scale_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scale_report = _scale_report()


def test_the_page_is_the_render_of_the_saved_results():
    results = ROOT / "benchmarks" / "results"
    scale = scale_report.load("bench_scale", results)
    page = (ROOT / "docs" / "scale.md").read_text(encoding="utf-8")
    expected = scale_report.render(page, scale_report.sections(scale, scale_report.load("bench_slots", results)))
    assert page == expected, "docs/scale.md drifted from the JSON: run python benchmarks/scale_report.py"
    assert f"**{scale_report.per_compile(scale)['lm_calls']:g} LM calls**" in page


def _result(workers_only_per_minute: float) -> dict:
    run = {
        "runner": "local",
        "workers": 1,
        "lm_calls_per_compile": 10.0,
        "prompt_tokens_per_compile": 5000,
        "completion_tokens_per_compile": 200,
        "workers_only_per_minute": workers_only_per_minute,
        "cpu_seconds_per_compile": 0.5,
        "driver_commits_per_second": 4.0,
    }
    assumptions = {"users": 1_000_000, "seconds": 86_400, "api_call_seconds": 2.0, "completion_tokens_per_call": 100}
    return {"latency_seconds": 0.2, "prices": {"m": [0.1, 0.4]}, "projection": assumptions, "runs": [run]}


def test_the_projection_multiplies_the_measured_compile_by_the_assumptions():
    p = scale_report.projection(_result(workers_only_per_minute=60.0))  # 1 s a compile: 5 latencies of 0.2 s
    assert p["lm_calls"] == 10_000_000 and p["prompt_tokens"] == 5_000_000_000
    assert p["cost_usd"]["m"] == {"scripted": 500 + 80, "assumed": 500 + 400}  # 5B x $0.1 + out x $0.4
    assert p["per_compile"]["latencies"] == 5.0 and p["compile_seconds"] == 10.0
    assert p["in_flight"] == 116 and p["busy_cores"] == 6  # ceil(11.57 x 10 s), ceil(11.57 x 0.5 s)
    assert p["driver_days"] == 2.9  # 1M commits at 4 a second (the median of the runs)
