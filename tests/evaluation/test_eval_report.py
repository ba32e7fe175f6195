"""The report: a Markdown table with our numbers and the paper's, a PNG chart, both rebuilt from the log alone
(by `persona-agent eval report` too), with bootstrap intervals equal to the reference implementation."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from persona_agent.core.records import user_key
from persona_agent.core.tasks import LAMP_2N, LAMP_3, NEWS_CATEGORIES
from persona_agent.evaluation.cli import eval_app
from persona_agent.evaluation.head_to_head import sign_test
from persona_agent.evaluation.intervals import bootstrap_interval
from persona_agent.evaluation.metrics import metric_function
from persona_agent.evaluation.report import N_RESAMPLES, _p_value, score_with_intervals, write_report


def test_markdown_table_holds_our_numbers_and_the_papers(full_run):
    results = json.loads(full_run.result.results.read_text())
    markdown = full_run.result.markdown.read_text()
    rows: dict[str, str] = {}
    for line in markdown.splitlines():  # the first table: the head-to-head one below repeats the labels
        if line.startswith("| "):
            rows.setdefault(line.split(" | ")[0].lstrip("| "), line)
    majority = next(s for s in results["summary"] if s["method"] == "majority")
    interval = majority["metrics"]["accuracy"]
    assert rows["user majority label (floor)"].startswith(
        f"| user majority label (floor) | 0.600 [{interval['low']:.3f}, {interval['high']:.3f}] |"
    )
    assert "| nearest profile item (floor) | 0.800 [" in markdown
    # the paper's figures sit beside ours: PersonaAgent 0.796 / 0.532, ReAct 0.639, no paper F1 for ReAct
    assert " | 0.796 | 0.532 | 2 | 5 | 0 | " in rows["PersonaAgent"]
    assert " | 0.639 | — | 2 | 5 | 0 | 3.0 | " in rows["ReAct"]
    aligned = next(s for s in results["summary"] if s["method"] == "persona_agent")["alignment_per_user"]
    assert rows["PersonaAgent"].endswith(f" | {aligned['calls']:.1f} | {aligned['seconds']:.1f} |")
    assert rows["ReAct"].endswith(" | — | — |")
    assert results["command"] in markdown and results["report_command"] in markdown
    assert results["command"].startswith("persona-agent eval run --task lamp2n --users 5 --queries 3 --methods all")
    assert "Status: complete; 100 examples, 0 failed" in markdown
    # the planned agent answers in one call, its mode in every row, the fitted vote floor in none
    log = [json.loads(line) for line in (full_run.result.run_dir / "predictions.jsonl").read_text().splitlines()]
    planned = [r for r in log if r.get("method") == "planned"]
    assert planned and all(r["mode"] == "planned" and r["calls"] == 1 for r in planned)
    assert all(r["calls"] == 0 for r in log if r.get("method") == "vote")
    # the planned agent's own alignment costs sit in its row, and it meets every method query by query
    aligned = next(s for s in results["summary"] if s["method"] == "planned")["alignment_per_user"]
    own = [r for r in log if r.get("stage") == "align:persona_aligner:planned"]  # not the ReAct agent's
    assert aligned["builds"] == len(own) and aligned["calls"] == pytest.approx(sum(r["calls"] for r in own) / len(own))
    assert rows["PersonaAgent planned"].endswith(f" | {aligned['calls']:.1f} | {aligned['seconds']:.1f} |")
    h2h = results["planned_head_to_head"]
    assert h2h["reference"] == "planned" and {"nearest", "vote", "rag"} <= {m["method"] for m in h2h["matchups"]}
    assert "| PersonaAgent planned vs | queries | wins | losses | ties | sign test p |" in markdown


def test_chart_is_a_png_that_records_its_command(full_run):
    results = json.loads(full_run.result.results.read_text())
    with Image.open(full_run.result.chart) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 500
        assert image.info["Description"] == results["command"]


def test_report_command_rebuilds_the_same_files_from_the_log(full_run):
    run_dir = full_run.result.run_dir
    before = full_run.result.results.read_bytes(), full_run.result.markdown.read_bytes()
    for name in ("results.json", "results.md", "results.png"):
        (run_dir / name).unlink()
    outcome = CliRunner().invoke(eval_app, ["report", str(run_dir)])
    assert outcome.exit_code == 0, outcome.output
    assert "LaMP-2N" in outcome.output and (run_dir / "results.png").is_file()
    assert (full_run.result.results.read_bytes(), full_run.result.markdown.read_bytes()) == before


def test_partial_runs_say_so(full_run, tmp_path):
    run_dir = tmp_path / "partial"
    run_dir.mkdir()
    lines = full_run.result.log.read_text().splitlines()
    alice = user_key("LaMP-2N", "alice")
    kept = [line for line in lines if '"method": "persona_agent+copro"' not in line or f'"user": "{alice}"' in line]
    (run_dir / "predictions.jsonl").write_text("\n".join(kept) + "\n")
    write_report(run_dir)
    markdown = (run_dir / "results.md").read_text()
    assert "| PersonaAgent + COPRO | " in markdown and " | 1 | 3 of 5 | 0 | " in markdown
    results = json.loads((run_dir / "results.json").read_text())
    assert "PARTIAL" in markdown and results["complete"] is False
    # like for like: every method rescored on the 3 queries (alice's) that COPRO reached too
    paired = results["paired"]
    assert (paired["n_users"], paired["n_queries"]) == (1, 3)
    for method in ("majority", "persona_agent"):
        rows = [r for r in results["predictions"] if r["method"] == method and r["user"] == alice]
        accuracy = sum(r["prediction"] == r["gold"] for r in rows) / 3
        assert paired["metrics"][method]["accuracy"]["estimate"] == pytest.approx(accuracy)
    assert "every method on the 3 queries of 1 user that all of them answered" in markdown
    with Image.open(run_dir / "results.png") as image:
        assert image.format == "PNG"


def test_a_complete_run_has_no_paired_table(full_run):
    assert json.loads(full_run.result.results.read_text())["paired"] is None
    assert "Like for like" not in full_run.result.markdown.read_text()


def test_report_errors_without_a_log(tmp_path):
    outcome = CliRunner().invoke(eval_app, ["report", str(tmp_path)])
    assert outcome.exit_code == 1 and "no run metadata" in outcome.output


@pytest.mark.parametrize("seed", [0, 7])
def test_vectorized_intervals_equal_the_reference_bootstrap(seed):
    rng = random.Random(seed)
    golds = [rng.choice(NEWS_CATEGORIES[:6]) for _ in range(40)]
    preds = [g if rng.random() < 0.6 else rng.choice([*NEWS_CATEGORIES[:8], "weather"]) for g in golds]
    ours = score_with_intervals(LAMP_2N, preds, golds, seed)
    for name in ("accuracy", "f1"):
        ref = bootstrap_interval(metric_function(LAMP_2N, name), preds, golds, n_resamples=N_RESAMPLES, seed=seed)
        assert np.allclose(
            [ours[name]["estimate"], ours[name]["low"], ours[name]["high"]], [ref.estimate, ref.low, ref.high]
        )
    ratings_gold = [str(rng.randint(1, 5)) for _ in range(30)]
    ratings_pred = [str(rng.randint(1, 5)) if rng.random() < 0.9 else "five" for _ in range(30)]
    ours = score_with_intervals(LAMP_3, ratings_pred, ratings_gold, seed)
    for name in ("MAE", "RMSE"):
        ref = bootstrap_interval(
            metric_function(LAMP_3, name), ratings_pred, ratings_gold, n_resamples=N_RESAMPLES, seed=seed
        )
        assert np.allclose(
            [ours[name]["estimate"], ours[name]["low"], ours[name]["high"]], [ref.estimate, ref.low, ref.high]
        )


def test_head_to_head_agrees_with_the_accuracies(full_run):
    """Per query, PersonaAgent's wins minus losses against a method is its accuracy gap times the queries."""
    results = json.loads(full_run.result.results.read_text())
    h2h = results["head_to_head"]
    accuracy = {s["method"]: s["metrics"]["accuracy"]["estimate"] for s in results["summary"]}
    others = [s["method"] for s in results["summary"] if s["method"] != "persona_agent"]
    assert h2h["reference"] == "persona_agent" and [m["method"] for m in h2h["matchups"]] == others
    for m in h2h["matchups"]:
        assert m["n"] == 5 and m["wins"] + m["losses"] + m["ties"] == 5
        assert m["wins"] - m["losses"] == round((accuracy["persona_agent"] - accuracy[m["method"]]) * 5)
    markdown = full_run.result.markdown.read_text()
    assert "| PersonaAgent vs | queries | wins | losses | ties | sign test p |" in markdown


def test_the_other_strategies_meet_each_other_query_by_query(full_run):
    """GEPA against COPRO: wins minus losses is their accuracy gap times the queries, and the table shows it."""
    results = json.loads(full_run.result.results.read_text())
    h2h = results["strategy_head_to_head"]
    accuracy = {s["method"]: s["metrics"]["accuracy"]["estimate"] for s in results["summary"]}
    assert h2h["reference"] == "persona_agent+gepa"
    assert [m["method"] for m in h2h["matchups"]] == ["persona_agent+copro"]
    (m,) = h2h["matchups"]
    assert m["n"] == 5 and m["wins"] + m["losses"] + m["ties"] == 5
    assert m["wins"] - m["losses"] == round((accuracy["persona_agent+gepa"] - accuracy["persona_agent+copro"]) * 5)
    markdown = full_run.result.markdown.read_text()
    row = f"| PersonaAgent + COPRO | 5 | {m['wins']} | {m['losses']} | {m['ties']} |"
    assert "| PersonaAgent + GEPA vs | queries | wins | losses | ties | sign test p |" in markdown and row in markdown


def test_a_tiny_sign_test_p_never_prints_as_zero():
    """36 wins to 8 losses gives p = 2.5e-5: the table must say `<0.001`, not a `0.000` that reads as impossible."""
    assert 0 < sign_test(36, 8) < 0.001
    assert _p_value(sign_test(36, 8)) == "<0.001"
    assert _p_value(sign_test(18, 5)) == "0.011"
    assert _p_value(1.0) == "1.000"
