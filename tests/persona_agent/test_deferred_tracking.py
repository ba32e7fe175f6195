"""A fan-out's MLflow work in another process (`persona_agent.deferred_tracking`): the same runs, prompt versions
and aliases as inline tracking, run ids recorded by the driver, and no run of a forgotten user left behind."""

from __future__ import annotations

import pytest

from persona_agent.compiling import CompileOptions, compile_user
from persona_agent.fanout import compile_all
from persona_agent.runners import LocalRunner
from persona_agent.testing import ScriptedLM
from persona_agent.tracking.names import prompt_name
from tests.support import CONCISE, history, make_workspace, persona_script

USERS = ("ann", "bob", "cat")


@pytest.fixture
def workspace(tracking_home, embedder):
    ws = make_workspace(embedder, lm=ScriptedLM(persona_script()))
    for user in USERS:
        ws.store.add(user, history(3))
    yield ws
    ws.close()


def _runs(ws, user: str) -> list:
    client = ws.tracker.client
    return client.search_runs([ws.tracker.experiment_id], f"tags.user_id = '{user}'")


@pytest.mark.parametrize("processes", [0, 1])
def test_a_fanout_tracks_every_version_the_same_inline_or_in_a_tracking_process(workspace, processes):
    workspace.settings = workspace.settings.model_copy(update={"fanout_tracking_processes": processes})
    runner = LocalRunner(workers=3)
    try:
        report = compile_all(workspace, CompileOptions(n=2), runner, retries=0)
    finally:
        runner.close()
    assert sorted(r.user_id for r in report.compiled) == list(USERS)
    client = workspace.tracker.client
    for result in report.compiled:
        records = workspace.registry.history(result.user_id)
        assert [r.version for r in records] == [0, 1] and all(r.mlflow_run_id for r in records)
        assert result.mlflow_run_id == records[1].mlflow_run_id and result.tracking_error is None
        runs = {r.info.run_id: r for r in _runs(workspace, result.user_id)}
        assert set(runs) == {r.mlflow_run_id for r in records}  # v0's own run, v1's run, nothing else
        assert all(r.info.status == "FINISHED" for r in runs.values())
        assert workspace.tracker.load_document(records[1].mlflow_run_id) == workspace.registry.program(
            result.user_id, 1
        )
        live = client.get_prompt_version_by_alias(prompt_name(result.user_id), "live")
        assert live.template == CONCISE and live.tags["run_id"] == records[1].mlflow_run_id


def test_a_forget_waits_for_the_users_pending_runs_before_erasing(workspace):
    """A run still being logged in the tracking process when the user is forgotten would land after the erasure."""
    with workspace.deferred_tracking(1) as tracked:
        result = compile_user(workspace, "ann", CompileOptions(n=2))
        assert result.mlflow_run_id is None  # handed to the tracking process
        report = workspace.forget("ann")
        assert report.extra["mlflow_runs"] == 2  # v0's and v1's runs: waited for, then deleted
    assert ("ann", 1) in tracked and tracked[("ann", 1)].run_id is not None  # it was logged, then erased
    assert _runs(workspace, "ann") == []
    assert workspace.registry.history("ann") == []
