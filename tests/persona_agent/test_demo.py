"""`persona-agent demo` end to end on the shipped sample with the scripted LM: a compiled persona that differs from
v0, its MLflow run with the persona artifact, an answer before and after, the program loaded back and served, and
a second run in the same home."""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil

import pytest
from mlflow import MlflowClient
from rich.console import Console
from typer.testing import CliRunner

from persona_agent import cli, demo
from persona_agent.core.errors import InvalidInputError
from persona_agent.core.labels import LAMP_2N_CATEGORIES
from persona_agent.demo import MARKER, DemoOptions, fresh_home, run_sample_demo, sample_path
from persona_agent.testing import ScriptedLM
from persona_agent.tracking.names import prompt_name
from tests.support import GRADIENT, LOSS, PROFILE

ANSWER = "article, trajectory -> category"
PLANNED_ANSWER = "article -> category"  # planned mode's one call (persona_agent.programs.planned)
EDIT = "persona, gradient -> add, remove"
TASTE = "Files every AI story, research included, under business."


@pytest.fixture(autouse=True)
def _migrated_mlflow(monkeypatch, mlflow_template):
    """Each run's fresh home gets a copy of the session's migrated (empty) MLflow database: migrating takes seconds."""

    made = demo.fresh_home

    def fresh_home(root):
        home = made(root)
        shutil.copy(mlflow_template, home / "mlflow.db")
        return home

    monkeypatch.setattr(demo, "fresh_home", fresh_home)


def demo_lm(answer: str = ANSWER) -> ScriptedLM:
    """Answers `business` once the persona says so, else what a generic reader says of an AI story."""

    def category(call):  # like the model: the persona's taste, or the label its demos (earlier turns) show
        copied = [m["content"] for m in call.messages[1:-1] if m["role"] == "assistant"]
        business = TASTE in call.messages[0]["content"] or copied.count("business") > len(copied) / 2
        return {"category": "business" if business else "science & technology"}

    return ScriptedLM(
        {
            PROFILE: {"profile": "Covers AI, chips and markets."},
            answer: category,
            LOSS: {"matches": False, "critique": "She files AI stories under business."},
            GRADIENT: {"gradient": "- AI stories are business news to this user"},
            EDIT: {"add": [TASTE], "remove": []},
        }
    )


def test_the_sample_is_shipped_and_has_distinct_checkable_tastes():
    rows = [json.loads(line) for line in sample_path().read_text(encoding="utf-8").splitlines()]
    users = {r["user_id"] for r in rows}
    assert len(users) == 5 and all(15 <= sum(r["user_id"] == u for r in rows) <= 20 for u in users)
    assert all(r["response"] in LAMP_2N_CATEGORIES for r in rows)
    ai = {u: {r["response"] for r in rows if r["user_id"] == u and " AI " in f" {r['query']} "} for u in users}
    assert ai["ada"] == {"business"} and ai["grace"] == {"science & technology", "politics"}  # an AI bill: politics
    ada = [r for r in rows if r["user_id"] == "ada"]
    assert [r["response"] for r in ada[-DemoOptions().n :]] == ["business"] * DemoOptions().n


def test_the_demo_runs_the_whole_loop(tmp_path, embedder):
    lm = demo_lm()
    report = run_sample_demo(tmp_path / "demo", lm=lm, embedder=embedder)
    assert report.mode == "react"  # `auto` with a LM other than the offline model
    assert (report.users, report.interactions) == (5, 80)
    assert report.profile == "Covers AI, chips and markets." and "Covers AI" in report.persona_v0
    compiled = report.compiled
    assert (compiled.version, compiled.parent, compiled.changed, compiled.promoted) == (1, 0, True, True)
    assert compiled.stop_reason == "completed" and compiled.estimate["max_lm_calls"] <= DemoOptions().max_lm_calls
    assert f"+- {TASTE}" in report.diff
    assert (report.before.persona_version, report.before.text) == (0, "science & technology")
    assert (report.after.persona_version, report.after.text) == (1, "business")
    # MLflow: a finished run with the persona, its diff and the program
    run = MlflowClient(tracking_uri=f"sqlite:///{report.home.resolve()}/mlflow.db").get_run(compiled.mlflow_run_id)
    assert run.info.status == "FINISHED" and {"persona.md", "persona.diff", "program.json"} <= set(report.artifacts)
    assert report.mlflow_ui == f"mlflow ui --backend-store-uri sqlite:///{report.home.resolve()}/mlflow.db"
    # loaded back from the run, and served through the OpenAI-compatible app with a user token
    assert report.loaded == "business"
    assert report.served["object"] == "chat.completion" and report.served["system_fingerprint"] == "ada@v1"
    assert report.served["choices"][0]["message"]["content"] == "business"
    # profile 1, two answers, compile (2 simulations, 2 losses, gradient, edit), loaded 1, served 1
    assert len(lm.calls) == 1 + 2 + 6 + 1 + 1 and report.with_memory is None  # memory as demos: planned mode
    assert report.lm_calls == {"profile": 1, "compile": 6, "loaded": 1, "answers": 2}


def test_the_demo_in_planned_mode_learns_a_v1_that_changes_the_answer(tmp_path, embedder):
    """`auto` is planned on the offline model: the same loop, each answer one call scored over the labels."""
    lm = demo_lm(PLANNED_ANSWER)
    options = DemoOptions(spec=dataclasses.replace(demo.DEMO_SPEC, mode="planned"))
    console = Console(record=True, width=200)
    report = run_sample_demo(tmp_path / "demo", lm=lm, embedder=embedder, options=options, console=console)
    assert report.mode == "planned" and "the agent answers in planned mode" in console.export_text(clear=False)
    compiled = report.compiled
    assert (compiled.version, compiled.changed, compiled.stop_reason) == (1, True, "completed")
    assert f"+- {TASTE}" in report.diff
    assert (report.before.text, report.after.text, report.loaded) == ("science & technology", "business", "business")
    assert report.with_memory.text == "business"  # v0 with ada's nearest past items (all business) as demos
    assert "4b. with memory (persona v0, planned mode, 5 nearest past items shown): business" in console.export_text()
    assert report.served["choices"][0]["message"]["content"] == "business"
    assert PLANNED_ANSWER in {c.spec for c in lm.calls} and ANSWER not in {c.spec for c in lm.calls}
    assert report.lm_calls == {"profile": 1, "compile": 6, "loaded": 1, "answers": 3}


def test_the_cli_demo_runs_twice_in_its_own_home(monkeypatch, embedder, tmp_path):
    monkeypatch.setattr(demo, "make_lm", lambda spec, settings: demo_lm())
    monkeypatch.setattr(demo, "run_sample_demo", functools.partial(run_sample_demo, embedder=embedder))
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(cli.app, ["demo"])
        assert result.exit_code == 0, result.output
        assert "v1 (from v0), live" in result.stdout and "mlflow ui --backend-store-uri" in result.stdout
        assert "as ada@v1: business" in result.stdout
    root = tmp_path / "home" / "demo"
    (home,) = root.glob("run-*")  # the first run's home was removed
    # one home's runs only: v0's (logged at its first compile) and v1's
    assert (root / MARKER).is_file() and len(list((home / "mlartifacts").rglob("persona.md"))) == 2


def test_the_demo_never_removes_a_folder_it_did_not_make(tmp_path):
    home = tmp_path / "mine"
    home.mkdir()
    (home / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInputError) as info:
        fresh_home(home)
    assert info.value.field == "home" and (home / "notes.txt").read_text() == "keep me"
    assert (fresh_home(tmp_path / "new").parent / MARKER).is_file()


@pytest.mark.slow
@pytest.mark.ci
def test_the_demo_with_the_offline_model(tmp_path, embedder, capsys):
    """The demo on the offline model (in CI): a v1 that differs from v0, its MLflow run with the persona, the
    prompt's live alias on it, answers before and after; prints the figures the README states."""
    pytest.importorskip("xllamacpp")
    report = run_sample_demo(tmp_path / "demo", lm="local", embedder=embedder)
    assert report.mode == "planned"  # `auto` on the offline model
    compiled = report.compiled
    assert (compiled.version, compiled.changed) == (1, True) and report.diff.count("\n+") >= 1, compiled.stop_reason
    assert compiled.usage["calls"] <= DemoOptions().max_lm_calls and report.served["choices"]
    assert {"persona.md", "program.json"} <= set(report.artifacts)
    client = MlflowClient(tracking_uri=f"sqlite:///{report.home.resolve()}/mlflow.db")
    assert client.get_prompt_version_by_alias(prompt_name("ada"), "live").tags["persona_version"] == "1"
    assert report.before.text and report.with_memory.text and report.after.text and report.loaded
    with capsys.disabled():
        print(
            f"\ndemo ({report.mode} mode): {report.seconds} s, by step {report.step_seconds}, LM calls {report.lm_calls}"
        )
        print(
            f"v{compiled.version} changed={compiled.changed}: {report.before.text} -> {report.after.text}"
            f" (with memory: {report.with_memory.text})"
        )
