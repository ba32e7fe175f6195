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
    assert block == headline_table(load_runs(RUNS), REPO), f"README.md's results table {STALE}"
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
    assert _readme_block(text) == headline_table(runs, tmp_path) and "old figures" not in text
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
