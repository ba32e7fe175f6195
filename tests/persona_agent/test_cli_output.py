"""What the CLI prints, for a reader and for a script: error lines unwrapped, `personas diff` line by line,
`personas list` naming the MLflow run of every version, the initial one included."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from persona_agent import cli
from persona_agent.workspace import Workspace
from tests.support import scripted_lm

runner = CliRunner()


@pytest.fixture(autouse=True)
def _scripted(monkeypatch, embedder, tracking_home):
    monkeypatch.setattr(
        cli,
        "open_workspace",
        lambda settings, *, needs_lm: Workspace(settings, embedder=embedder, lm=scripted_lm() if needs_lm else None),
    )


def test_an_error_message_is_one_line_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # Rich's width: the terminal's, else 80 columns
    missing = tmp_path / ("a-long-folder-name-" * 6) / "interactions.jsonl"
    result = runner.invoke(cli.app, ["ingest", str(missing), "--user", "alice"])
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(missing) in line and len(line) > 120


def test_personas_list_shows_the_run_of_every_version_the_initial_one_included(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    rows = [{"user_id": "alice", "query": f"question {i}", "response": "ok"} for i in range(4)]
    data = tmp_path / "a.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert runner.invoke(cli.app, ["ingest", str(data)]).exit_code == 0
    assert runner.invoke(cli.app, ["compile", "--user", "alice", "--n", "2"]).exit_code == 0
    result = runner.invoke(cli.app, ["personas", "list", "--user", "alice"])
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines() if "│" in line]
    runs = {row[0]: row[-1] for row in cells if row and row[0] in ("v0", "v1")}
    assert set(runs) == {"v0", "v1"}, result.stdout
    assert all(len(run) == 8 for run in runs.values()) and runs["v0"] != runs["v1"], result.stdout
