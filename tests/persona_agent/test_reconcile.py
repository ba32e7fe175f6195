"""Crash leftovers: a compile killed with SIGKILL inside MLflow logging leaves a RUNNING run and a version without
a run id; the next writable workspace to open MLflow marks the run FAILED, tracks the version and logs it."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from mlflow.entities import ViewType

from persona_agent.compiling import CompileOptions, compile_user
from persona_agent.reconciling import REASON
from persona_agent.testing import ScriptedLM
from persona_agent.tracking.tracker import RECONCILED_TAG
from persona_agent.workspace import Workspace
from tests.support import history, make_workspace, persona_script

# Compiles alice with the scripted LM and dies by SIGKILL once the run has its persona.md and persona.diff,
# when MLflow is asked to store program.json: the registry already holds version 1, without a run id.
DIES_IN_LOGGING = textwrap.dedent(
    """
    import os, signal
    from persona_agent.compiling import CompileOptions, compile_user
    from persona_agent.testing import ScriptedLM
    from persona_agent.workspace import Workspace
    from tests.support import history, persona_script

    ws = Workspace(lm=ScriptedLM(persona_script()))
    ws.store.add("alice", history())
    client = ws.tracker.client
    log_artifacts = client.log_artifacts

    def log_artifacts_then_die(run_id, local_dir, artifact_path=None):
        if client.get_run(run_id).data.tags["persona_version"] == "1":
            print("dying", run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return log_artifacts(run_id, local_dir, artifact_path)

    client.log_artifacts = log_artifacts_then_die
    compile_user(ws, "alice", CompileOptions())
    """
)


def _runs(ws: Workspace) -> dict[str, object]:
    found = ws.tracker.client.search_runs([ws.tracker.experiment_id], run_view_type=ViewType.ALL)
    return {r.info.run_id: r for r in found}


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_compile_killed_inside_mlflow_logging_is_reconciled_on_open(tracking_home, embedder, caplog):
    proc = subprocess.run(
        [sys.executable, "-c", DIES_IN_LOGGING],
        cwd=os.getcwd(),
        env={**os.environ, "PERSONA_AGENT_HOME": str(tracking_home), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    dead_run = proc.stdout.split()[-1]

    with caplog.at_level(logging.WARNING, logger="persona_agent.reconciling"):
        ws = make_workspace(embedder, lm=ScriptedLM(persona_script()))
        try:
            assert ws.registry.get("alice", 1).mlflow_run_id is None  # what the crash left
            runs = _runs(ws)  # opening MLflow reconciles
            result = ws.reconciliation
            assert result is not None and result.failed_runs == (dead_run,)
            assert result.tracked_versions == ("alice@v1",) and result.flagged_versions == ()
            assert [r.info.status for r in runs.values()].count("RUNNING") == 0
            assert runs[dead_run].info.status == "FAILED" and runs[dead_run].data.tags[RECONCILED_TAG] == REASON
            new_run = ws.registry.get("alice", 1).mlflow_run_id
            assert new_run is not None and runs[new_run].info.status == "FINISHED"
            assert runs[new_run].data.params["action"] == "reconcile"
            assert ws.tracker.load_document(new_run) == ws.registry.program("alice", 1)
            assert ws.reconcile().counts == {"failed_runs": 0, "tracked_versions": 0, "flagged_versions": 0}
        finally:
            ws.close()
    assert "1 RUNNING run(s) marked FAILED" in caplog.text and "alice@v1" in caplog.text


def test_runs_and_versions_this_process_is_logging_are_left_alone(tracking_home, embedder):
    """A reconcile while a compile of this process is inside MLflow logging (run RUNNING, version without a
    run id) touches neither; the compile then finishes both."""
    ws = make_workspace(embedder, lm=ScriptedLM(persona_script()))
    try:
        ws.store.add("alice", history())
        ws.reconcile()  # MLflow open: a reconcile now only sees what the compile below makes
        client = ws.tracker.client
        log_artifacts, inside, release = client.log_artifacts, threading.Event(), threading.Event()

        def log_artifacts_and_wait(run_id, local_dir, artifact_path=None):
            if client.get_run(run_id).data.tags["persona_version"] == "1":  # not v0's run, logged first
                inside.set()
                assert release.wait(30)
            return log_artifacts(run_id, local_dir, artifact_path)

        client.log_artifacts = log_artifacts_and_wait
        results = []
        compiling = threading.Thread(target=lambda: results.append(compile_user(ws, "alice", CompileOptions())))
        compiling.start()
        assert inside.wait(30)
        result = ws.reconcile()
        assert result.counts == {"failed_runs": 0, "tracked_versions": 0, "flagged_versions": 0}
        assert sorted(r.info.status for r in _runs(ws).values()) == ["FINISHED", "RUNNING"]
        release.set()
        compiling.join()
        client.log_artifacts = log_artifacts
        assert results[0].mlflow_run_id == ws.registry.get("alice", 1).mlflow_run_id
        assert [r.info.status for r in _runs(ws).values()] == ["FINISHED", "FINISHED"]
    finally:
        release.set()
        ws.close()
