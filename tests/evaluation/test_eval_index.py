"""The evaluation index is generated, never edited: the committed `benchmarks/results/README.md` and the README's
results table equal what `persona-agent eval index` makes from the committed runs, whose reports equal what
their logs give."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persona_agent.core.errors import InvalidInputError
from persona_agent.evaluation.cli import eval_app
from persona_agent.evaluation.report import build_results
from persona_agent.evaluation.results_index import (
    RESULTS_BEGIN,
    RESULTS_END,
    default_page,
    goal_lines,
    headline_runs,
    headline_table,
    load_runs,
    render_index,
    splice,
)

REPO = Path(__file__).resolve().parents[2]
RUNS = REPO / "benchmarks" / "results" / "eval"
STALE = "is stale or edited by hand: regenerate it with `persona-agent eval index --readme README.md`"


def _readme_block(text: str) -> str:
    return text[text.index(RESULTS_BEGIN) + len(RESULTS_BEGIN) : text.index(RESULTS_END)].strip("\n")


def test_committed_index_page_is_what_the_runs_generate():
    page = default_page(RUNS)
    assert page == REPO / "benchmarks" / "results" / "README.md"
    assert page.read_text(encoding="utf-8") == render_index(load_runs(RUNS), page.parent), f"{page} {STALE}"


def test_readme_results_table_is_what_the_runs_generate():
    readme = REPO / "README.md"
    block = _readme_block(readme.read_text(encoding="utf-8"))
    assert block == headline_table(headline_runs(load_runs(RUNS)), REPO), f"README.md's results table {STALE}"
    assert "benchmarks/results/README.md" in readme.read_text(encoding="utf-8")


@pytest.mark.parametrize("run", sorted(p.parent for p in RUNS.glob("*/*/results.json")), ids=str)
def test_committed_results_are_what_the_logs_give(run):
    """The index reads results.json; each must be the report of the committed predictions.jsonl."""
    expected = json.dumps(build_results(run), ensure_ascii=False, indent=1, allow_nan=False) + "\n"
    assert (run / "results.json").read_text(encoding="utf-8") == expected, f"{run}: run `persona-agent eval report`"


def test_index_command_regenerates_and_a_hand_edit_is_caught(tmp_path):
    root = tmp_path / "results" / "eval"
    shutil.copytree(RUNS, root, ignore=shutil.ignore_patterns("predictions.jsonl", "*.png"))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{RESULTS_BEGIN}\nold figures\n{RESULTS_END}\n\nmore\n", encoding="utf-8")
    outcome = CliRunner().invoke(eval_app, ["index", str(root), "--readme", str(readme)])
    assert outcome.exit_code == 0, outcome.output
    page = tmp_path / "results" / "README.md"
    runs = load_runs(root)
    assert page.read_text(encoding="utf-8") == render_index(runs, page.parent)
    assert "](eval/lamp3/local-20u-3q-seed0/results.md)" in page.read_text(encoding="utf-8")
    text = readme.read_text(encoding="utf-8")
    assert _readme_block(text) == headline_table(headline_runs(runs), tmp_path) and "old figures" not in text
    assert text.startswith("# Title\n") and text.endswith(f"{RESULTS_END}\n\nmore\n")
    assert "](results/eval/lamp2n/local-20u-3q-seed0/results.md)" in text

    edited = page.read_text(encoding="utf-8").replace("| 0.267 |", "| 0.241 |", 1)
    assert edited != render_index(runs, page.parent)  # what the committed-page test would catch


def test_index_never_overwrites_a_page_it_did_not_generate(tmp_path):
    root = tmp_path / "eval"
    shutil.copytree(RUNS, root, ignore=shutil.ignore_patterns("predictions.jsonl", "*.png"))
    (tmp_path / "README.md").write_text("# my notes\n", encoding="utf-8")
    outcome = CliRunner().invoke(eval_app, ["index", str(root)])
    assert outcome.exit_code == 2 and "not a generated index" in outcome.output
    assert (tmp_path / "README.md").read_text(encoding="utf-8") == "# my notes\n"


def test_index_errors_without_runs_or_markers(tmp_path):
    outcome = CliRunner().invoke(eval_app, ["index", str(tmp_path)])
    assert outcome.exit_code == 2 and "results.json" in outcome.output
    with pytest.raises(InvalidInputError, match="markers"):
        splice("# no markers\n", "table")


def _run(task: str, run: str, expected: int, complete: bool, methods=("majority",)) -> dict:
    summary = [
        {
            "method": m,
            "label": m,
            "group": "floor" if m == "majority" else "baseline",
            "n_expected": expected,
            "n_queries": expected,
            "metrics": {"accuracy": {"estimate": 0.5}},
            "per_sample": {"calls": 0, "tokens": 0, "seconds": 0},
        }
        for m in methods
    ]
    return {
        "task": task,
        "run": run,
        "complete": complete,
        "summary": summary,
        "_markdown": Path(f"/r/{task}/{run}/results.md"),
    }


def test_the_readme_shows_one_run_per_task_the_largest_complete_one():
    runs = [
        _run("LaMP-2N", "small", 60, True),
        _run("LaMP-2N", "big-partial", 300, False),
        _run("LaMP-3", "big-partial", 300, False),
        _run("LaMP-3", "tiny-partial", 10, False),
        _run("LaMP-2M", "a", 60, True),
        _run("LaMP-2M", "b", 300, True),
    ]
    chosen = {r["task"]: r["run"] for r in headline_runs(runs)}
    # a complete run wins over a larger partial one; without a complete run, the largest partial one
    assert chosen == {"LaMP-2N": "small", "LaMP-3": "big-partial", "LaMP-2M": "b"}


def test_runs_of_the_planned_agent_headline_it_and_state_their_goal():
    run = _run("LaMP-2N", "r", 300, True, ("majority", "rag", "pag", "planned", "planned_no_alignment"))
    run.update(title="news", primary_metric="accuracy", lower_is_better={}, config={"lm": "local"})
    table = headline_table([run], Path("/r"))
    assert [line.split(" | ")[2] for line in table.splitlines()[2:]] == [
        "best no-LM floor: majority",
        "rag",
        "pag",
        "planned",
        "planned_no_alignment",
    ]
    run["goal"] = {
        "met": False,
        "criteria": [
            {"name": "queries", "met": True, "measured": "300 answered"},
            {"name": "beats RAG", "met": False, "measured": "rag: 3 wins, 4 losses"},
        ],
    }
    assert goal_lines([run], Path("/r")) == [
        "Goal check of the planned agent (each run page's table has every criterion):",
        "",
        "- [LaMP-2N `r`](LaMP-2N/r/results.md): not met: beats RAG (rag: 3 wins, 4 losses).",
        "",
    ]
