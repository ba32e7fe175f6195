"""Personas in MLflow's prompt registry (issue 41 item 5): each version is a prompt version of `persona.<user>`
with its run, parent, scores and check as tags; the alias `live` follows promote and rollback; `load_program`
takes `prompts:/persona.<user>@live`; forget leaves no prompt; retention bounds the versions kept."""

from __future__ import annotations

import json
import sqlite3
import threading

import pytest

from persona_agent.compiling import CompileOptions, compile_user
from persona_agent.tracking.names import model_name, prompt_name
from tests.support import CONCISE, SHORT, history, make_workspace

NAME = "persona.alice"


@pytest.fixture
def workspace(tracking_home, embedder):
    ws = make_workspace(embedder)
    ws.store.add("alice", history())
    yield ws
    ws.close()


def _live(ws):
    return ws.tracker.client.get_prompt_version_by_alias(NAME, "live")


def _versions(ws):
    return sorted(ws.tracker.client.search_prompt_versions(NAME), key=lambda v: int(v.version))


def test_compile_promote_rollback_and_forget_round_trip(workspace, tracking_home, monkeypatch):
    import mlflow

    result = compile_user(workspace, "alice", CompileOptions(n=3, iterations=1))
    assert result.promoted and result.version == 1
    live = _live(workspace)
    assert live.template == CONCISE and live.tags["persona_version"] == "1" and live.tags["parent_version"] == "0"
    assert live.tags["run_id"] == result.mlflow_run_id and live.tags["source"] == "aligned"
    assert json.loads(live.tags["scores"]) == workspace.registry.get("alice", 1).scores
    assert [v.tags["persona_version"] for v in _versions(workspace)] == ["0", "1"]  # v0 too, with its own run
    agent = workspace.load_program("alice", f"prompts:/{NAME}@live")
    assert agent.persona.text == CONCISE and agent.persona.version == 1
    with workspace.lm_context():
        assert agent(request="hi").response == SHORT
    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.settings.resolved_tracking_uri)
    assert mlflow.genai.load_prompt(f"prompts:/{NAME}@live").template == CONCISE  # plain MLflow reads it
    for thread in threading.enumerate():  # MLflow links the prompt to the active experiment in a thread
        if thread.name.startswith("link_prompt_to_experiment"):
            thread.join()

    workspace.promote("alice", 0)
    assert _live(workspace).tags["persona_version"] == "0"
    change = workspace.rollback("alice", 1)
    assert _live(workspace).tags["persona_version"] == str(change.record.version) == "2"
    assert _live(workspace).tags["run_id"] == change.record.mlflow_run_id

    report = workspace.forget("alice")
    assert report.extra["mlflow_prompt_versions"] == 3
    assert workspace.tracker.client.get_prompt(NAME) is None
    con = sqlite3.connect(tracking_home / "mlflow.db")
    assert con.execute("SELECT count(*) FROM registered_models").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM model_versions").fetchone() == (0,)


def test_retention_keeps_the_newest_versions_and_the_live_one(tracking_home, embedder):
    ws = make_workspace(embedder, mlflow_prompt_versions=2)
    try:
        ws.store.add("alice", history())
        compile_user(ws, "alice", CompileOptions(n=3, iterations=1))  # v0, v1
        for _ in range(3):
            ws.rollback("alice", 0)  # v2, v3, v4: each a new prompt version
        assert [v.tags["persona_version"] for v in _versions(ws)] == ["3", "4"]
        ws.promote("alice", 1)  # its prompt version was deleted: registered again
        assert _live(ws).tags["persona_version"] == "1" and _live(ws).template == CONCISE
        assert [v.tags["persona_version"] for v in _versions(ws)] == ["4", "1"]
        ws.rollback("alice", 0)  # v5: the oldest go, the live one (v1) stays
        assert [v.tags["persona_version"] for v in _versions(ws)] == ["1", "5"]
    finally:
        ws.close()


def test_no_prompts_when_retention_is_zero(tracking_home, embedder):
    ws = make_workspace(embedder, mlflow_prompt_versions=0)
    try:
        ws.store.add("alice", history())
        assert compile_user(ws, "alice", CompileOptions(n=3, iterations=1)).promoted
        assert ws.tracker.client.get_prompt(NAME) is None
    finally:
        ws.close()


@pytest.mark.parametrize("user_id", ["alice", "a b/c", "x" * 150])
def test_prompt_and_model_names_never_collide(user_id):
    assert prompt_name(user_id).startswith("persona.") and model_name(user_id).startswith("persona-")
    assert prompt_name(user_id)[len("persona.") :] == model_name(user_id)[len("persona-") :]


def test_a_compile_moves_the_live_alias_without_searching_and_recovers_from_outside_deletes(workspace, monkeypatch):
    """The commit remembers the prompt version it just registered (no search of every version, no lookup of
    the prompt); a prompt deleted behind the process's back is made again."""
    client = workspace.tracker.client
    calls: list[str] = []
    for name in ("search_prompt_versions", "get_prompt", "get_prompt_version_by_alias"):
        original = getattr(client, name)
        monkeypatch.setattr(client, name, lambda *a, _o=original, _n=name, **k: (calls.append(_n), _o(*a, **k))[1])
    result = compile_user(workspace, "alice", CompileOptions(n=3, iterations=1))
    assert result.version == 1 and _live(workspace).tags["persona_version"] == "1"
    assert calls.count("search_prompt_versions") == 0 and calls.count("get_prompt") == 1  # v0 made the prompt

    client.delete_prompt(NAME)  # e.g. from the MLflow UI
    calls.clear()
    workspace.rollback("alice", 0)
    live = _live(workspace)
    assert live.tags["persona_version"] == "2" and live.template == workspace.registry.get("alice", 2).text
