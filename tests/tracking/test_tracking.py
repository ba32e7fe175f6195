"""MLflow tracking: a compile's run holds exactly what the registry holds; no key or LM setting reaches any
artifact, param or tag; the registered pyfunc (logged from code, no pickle) answers with the LM configured
where it is loaded."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import dspy
import pytest

from persona_agent.compiling import CompileOptions, compile_user
from persona_agent.core.errors import TrackingError
from persona_agent.testing import ScriptedLM
from persona_agent.tracking import offload
from persona_agent.tracking.offload import TrackJob
from persona_agent.tracking.tracker import model_name
from tests.support import CONCISE, SECRET, SHORT, history, make_workspace


@pytest.fixture
def workspace(tracking_home, embedder, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    ws = make_workspace(embedder, mlflow_register_models=True)
    ws.store.add("alice", history())
    yield ws
    ws.close()


def _run(ws, run_id):
    return ws.tracker.client.get_run(run_id)


def test_a_compile_run_holds_what_the_registry_holds(workspace, tmp_path):
    result = compile_user(workspace, "alice", CompileOptions(n=3, iterations=1))
    assert result.changed and result.promoted and result.version == 1 and result.model_version == "1"
    record = workspace.registry.get("alice", 1)
    assert record.mlflow_run_id == result.mlflow_run_id
    run = _run(workspace, result.mlflow_run_id)
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert (tags["user_id"], tags["persona_version"], tags["parent_version"]) == ("alice", "1", "0")
    assert (tags["strategy"], tags["source"]) == ("persona_aligner", "aligned")
    assert (params["n"], params["iterations"], params["lm"], params["k"]) == ("3", "1", "scripted/lm", "4")
    assert metrics["lm_calls"] == record.usage["calls"] == result.usage["calls"] > 0
    assert metrics["total_tokens"] == record.usage["total_tokens"]
    client = workspace.tracker.client
    out = tmp_path / "artifacts"
    client.download_artifacts(result.mlflow_run_id, "", str(out))
    assert (out / "persona.md").read_text() == record.text == CONCISE
    assert json.loads((out / "program.json").read_text()) == workspace.registry.program("alice", 1)
    assert (out / "persona.diff").read_text() == workspace.registry.diff("alice", 0, 1)
    trace = json.loads((out / "alignment_trace.json").read_text())
    assert trace["final_persona"]["text"] == CONCISE and trace["user_id"] == "alice"
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.pickle"))
    assert (out / "model" / "MLmodel").is_file() and (out / "model" / "artifacts" / "program.json").is_file()
    # a rollback is a version too, with its own run
    change = workspace.rollback("alice")
    assert change.record.source == "rollback" and change.record.mlflow_run_id and change.model_version == "2"
    assert _run(workspace, change.record.mlflow_run_id).data.tags["source"] == "rollback"


def test_no_key_or_lm_setting_in_any_artifact_param_or_tag(workspace, tmp_path, tracking_home):
    compile_user(workspace, "alice", CompileOptions())
    workspace.rollback("alice")
    client = workspace.tracker.client
    runs = client.search_runs([workspace.tracker.experiment_id])
    assert len(runs) == 3  # v0 (logged by the compile), v1, the rollback's v2
    for run in runs:
        assert SECRET not in json.dumps(run.data.params) + json.dumps(run.data.tags)
        assert "api_key" not in json.dumps(run.data.params)
        out = tmp_path / run.info.run_id
        client.download_artifacts(run.info.run_id, "", str(out))
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files
        for path in files:
            text = path.read_bytes().decode("utf-8", "replace")
            assert SECRET not in text and "api_key" not in text, path
    for mv in client.search_model_versions(f"name = '{model_name('alice')}'"):
        assert SECRET not in json.dumps(mv.tags) + str(mv.description)
    # nothing in the tracking database either, nor in the registry's saved programs
    con = sqlite3.connect(tracking_home / "mlflow.db")
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
        assert SECRET not in json.dumps(con.execute(f"SELECT * FROM {table}").fetchall(), default=str), table
    for record in workspace.registry.history("alice"):
        assert SECRET not in json.dumps(workspace.registry.program("alice", record.version))


def test_the_champion_loads_as_a_pyfunc_that_uses_the_lm_configured_where_it_is_loaded(workspace, monkeypatch):
    import mlflow

    compile_user(workspace, "alice", CompileOptions())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", workspace.settings.resolved_tracking_uri)
    model = mlflow.pyfunc.load_model("models:/persona-alice@champion")
    loaded_lm = ScriptedLM(
        {
            "request, trajectory -> response": lambda call: {
                "response": "loaded-lm: " + ("concise" if "concise" in call.messages[0]["content"] else "generic")
            }
        }
    )
    with dspy.context(lm=loaded_lm):
        rows = model.predict([{"request": "What is new?"}])
    assert rows == [{"response": "loaded-lm: concise"}]  # the registered persona, answered by the loaded LM
    assert loaded_lm.calls and "What is new?" in loaded_lm.calls[0].inputs["request"]
    # the champion follows a rollback
    workspace.rollback("alice")
    model = mlflow.pyfunc.load_model("models:/persona-alice@champion")
    with dspy.context(lm=loaded_lm):
        assert model.predict([{"request": "again"}]) == [{"response": "loaded-lm: generic"}]


def test_load_program_from_mlflow_references(workspace):
    result = compile_user(workspace, "alice", CompileOptions())
    for ref in (result.mlflow_run_id, f"runs:/{result.mlflow_run_id}", "models:/persona-alice@champion"):
        agent = workspace.load_program("alice", ref)
        assert agent.persona.text == CONCISE and agent.persona.version == 1, ref
        with workspace.lm_context():
            assert agent(request="hi").response == SHORT
    with pytest.raises(ValueError):
        workspace.load_program("bob", result.mlflow_run_id)  # alice's program is not bob's


def test_a_damaged_saved_program_in_mlflow_is_a_tracking_error_naming_the_run(workspace, tmp_path):
    """A program.json the artifact store holds half-written (or edited by hand) is refused naming the run, not
    passed on as a JSON parser's error."""
    run_id = compile_user(workspace, "alice", CompileOptions()).mlflow_run_id
    damaged = tmp_path / "program.json"
    damaged.write_bytes(b'{"format": "persona_agent.program/1", "persona": {"te')
    workspace.tracker.client.log_artifact(run_id, str(damaged))  # overwrites the run's program.json
    with pytest.raises(TrackingError, match=f"program.json of {run_id} is not a saved program"):
        workspace.load_program("alice", run_id)


def test_compiling_without_registration_logs_a_run_but_no_model(tracking_home, embedder):
    ws = make_workspace(embedder)
    try:
        ws.store.add("bob", history())
        result = compile_user(ws, "bob", CompileOptions())
        assert result.model_version is None and result.mlflow_run_id
        files = {f.path for f in ws.tracker.client.list_artifacts(result.mlflow_run_id)}
        assert files == {"persona.md", "persona.diff", "program.json", "alignment_trace.json"}
        assert ws.tracker.client.search_registered_models() == []
        # an unchanged persona is still a run, marked unchanged, and makes no version
        again = compile_user(ws, "bob", CompileOptions())
        assert again.version == 1 and not again.changed
        assert _run(ws, again.mlflow_run_id).data.tags["changed"] == "false"
        assert [r.version for r in ws.registry.history("bob")] == [0, 1]
    finally:
        ws.close()
    assert Path(tracking_home / "mlartifacts").is_dir() and not Path("mlruns").exists()


def test_a_strategy_persona_check_becomes_a_searchable_tag(workspace):
    workspace.registry.ensure_live("alice", lambda: (CONCISE, None))
    record = workspace.registry.get("alice", 0)
    check = "would be repaired: no headings: kept as profile, instructions unchanged"
    flagged = workspace.tracker.log_version(record, document=None, trace={"persona_check": check})
    plain = workspace.tracker.log_version(record, document=None, trace={"strategy": "persona_aligner"})
    assert _run(workspace, flagged).data.tags["persona_check"] == check
    assert "persona_check" not in _run(workspace, plain).data.tags
    found = workspace.tracker.client.search_runs(
        [workspace.tracker.experiment_id], filter_string="tags.persona_check != 'ok'"
    )
    assert [r.info.run_id for r in found] == [flagged]


def test_the_sqlite_tracking_store_commits_through_a_write_ahead_log(workspace, tracking_home):
    """A version's run is ~60 sqlite commits: in WAL mode with synchronous=NORMAL they do not each sync the
    file; a new connection (another process, `mlflow ui`) sees every committed run."""
    result = compile_user(workspace, "alice", CompileOptions(n=3, iterations=1))
    database = tracking_home / "mlflow.db"
    with sqlite3.connect(database) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT count(*) FROM runs WHERE run_uuid = ?", (result.mlflow_run_id,)).fetchone()[0] == 1


def _champion_version(ws, user: str) -> str:
    model = ws.tracker.client.get_model_version_by_alias(model_name(user), "champion")
    return model.tags["persona_version"]


def test_a_refused_prompt_version_does_not_hold_the_champion_back_inline_or_in_a_tracking_process(
    workspace, monkeypatch
):
    """The prompt registry and the registered model are separate: when MLflow refuses the prompt version, the
    champion alias still follows the live version and the refusal is reported, whichever process tracks it."""

    def refuse(record, check=None):
        raise TrackingError("prompt registry refused the version")

    monkeypatch.setattr(workspace.tracker.prompts, "add", refuse)
    inline = compile_user(workspace, "alice", CompileOptions())  # the inline commit
    assert inline.tracking_error and "refused" in inline.tracking_error
    assert _champion_version(workspace, "alice") == "1"

    registry = workspace.registry
    record = registry.add(
        "alice", "Answer in one line.", source="manual", parent=1, program=registry.program("alice", 1)
    )
    job = TrackJob(
        settings=workspace.settings,
        record=record,
        document=registry.program("alice", record.version),
        diff=registry.diff("alice", 1, record.version),
        trace=None,
        params={"action": "promote"},
        register_model=True,
        changed=True,
        live=record,
        champion=True,
    )
    monkeypatch.setattr(offload, "_TRACKERS", {workspace.settings.model_dump_json(): workspace.tracker})
    tracked = offload.track(job)  # what a tracking process runs
    assert tracked.run_id and tracked.error and "refused" in tracked.error
    assert tracked.model_version is not None and _champion_version(workspace, "alice") == str(record.version)


def _refused(*args, **kwargs):
    from mlflow.exceptions import MlflowException

    raise MlflowException("API request to http://mlflow.internal:5000 failed: connection refused")


def test_an_unreachable_tracking_store_is_a_tracking_error_and_a_promote_stands(tracking_home, embedder, monkeypatch):
    """MLflow out of reach (its first call, the experiment lookup, refused) is a `TrackingError`: a compile raises
    it, a promote stands in DuckDB and reports it; neither lets MLflow's own exception out."""
    from mlflow import MlflowClient

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", _refused)
    ws = make_workspace(embedder, mlflow_register_models=True)
    try:
        ws.store.add("alice", history())
        with pytest.raises(TrackingError, match="connection refused"):
            compile_user(ws, "alice", CompileOptions())
        change = ws.promote("alice", 1)  # the compile's version, written before its run was refused
        assert ws.registry.live("alice").version == 1 and "connection refused" in change.tracking_error
    finally:
        ws.close()


def test_a_store_lost_while_a_run_ends_is_a_tracking_error_and_reconcile_fails_the_run_later(workspace, monkeypatch):
    """MLflow gone when a run ends: marking it FAILED is refused too, and the run's own error is raised, typed;
    the run stays RUNNING until a reconcile, with the store back, marks it FAILED."""
    client = workspace.tracker.client
    with monkeypatch.context() as patch:
        patch.setattr(client, "set_terminated", _refused)
        with pytest.raises(TrackingError, match="connection refused"):
            compile_user(workspace, "alice", CompileOptions())
    assert len(workspace.reconcile().failed_runs) == 2  # v0's run and the compile's


def test_an_experiment_deleted_in_mlflow_is_restored_by_the_next_run(workspace):
    """Deleting the experiment (MLflow's UI) while a workspace is open is what opening one after it recovers from
    (the experiment is restored): the open workspace's next run restores it too, rather than failing every compile."""
    compile_user(workspace, "alice", CompileOptions())
    client, experiment_id = workspace.tracker.client, workspace.tracker.experiment_id
    client.delete_experiment(experiment_id)
    workspace.store.add("bob", history())
    result = compile_user(workspace, "bob", CompileOptions())
    assert client.get_experiment(experiment_id).lifecycle_stage == "active"
    assert _run(workspace, result.mlflow_run_id).info.experiment_id == experiment_id
    assert len(workspace.tracker.user_runs("alice")) == 2  # alice's runs are back with it


def test_loading_a_reference_whose_run_mlflow_collected_names_the_reference(workspace):
    """The champion, the live prompt or the run itself, once its run is deleted and collected (`mlflow gc`): the
    error names the reference the caller gave, and its run."""
    from click.testing import CliRunner
    from mlflow.cli import gc

    result = compile_user(workspace, "alice", CompileOptions())
    run_id = result.mlflow_run_id
    workspace.tracker.client.delete_run(run_id)
    uri = workspace.settings.resolved_tracking_uri
    collected = CliRunner().invoke(gc, ["--backend-store-uri", uri, "--tracking-uri", uri, "--run-ids", run_id])
    assert collected.exit_code == 0, collected.output
    for ref in ("models:/persona-alice@champion", "prompts:/persona.alice@live", f"runs:/{run_id}"):
        with pytest.raises(TrackingError, match=f"{ref}.*{run_id}.*not found"):
            workspace.load_program("alice", ref)


def test_a_tracking_store_that_cannot_be_opened_is_a_tracking_error_naming_it(tmp_path, embedder):
    """A tracking URI MLflow cannot open (here a file stands where its folder should be; likewise a read-only or
    unreadable database) is a `TrackingError` naming the store: a compile raises it, a promote reports it."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    ws = make_workspace(embedder, mlflow_tracking_uri=f"sqlite:///{blocked}/mlflow.db")
    try:
        ws.store.add("alice", history())
        with pytest.raises(TrackingError, match=f"sqlite:///{blocked}/mlflow.db"):
            compile_user(ws, "alice", CompileOptions())
        change = ws.promote("alice", 1)
        assert ws.registry.live("alice").version == 1 and str(blocked) in change.tracking_error
        with pytest.raises(TrackingError, match="not-a-folder"):
            ws.load_program("alice", "models:/persona-alice@champion")
    finally:
        ws.close()


def test_a_full_artifact_store_when_registering_a_champion_is_reported_and_the_promote_stands(
    tracking_home, embedder, monkeypatch
):
    """Registering a version logged without `model/` writes it first; an artifact store that refuses (full disk,
    read-only) is reported as the champion's error, as it is for a run, and the promote stands."""
    import errno

    ws = make_workspace(embedder)  # runs logged without `model/`
    try:
        ws.store.add("alice", history())
        compile_user(ws, "alice", CompileOptions())

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ws.tracker.client, "log_artifacts", full)
        change = ws.promote("alice", 0, register_model=True)
        assert ws.registry.live("alice").version == 0 and change.model_version is None
        assert "persona-alice" in change.tracking_error and "No space left" in change.tracking_error
    finally:
        ws.close()
