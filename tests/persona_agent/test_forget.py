"""Forget everywhere: after `forget`, no trace of the user is left in DuckDB, FAISS, MLflow or any cache, and
other users are untouched."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from persona_agent.compiling import CompileOptions, compile_user
from persona_agent.core.errors import TrackingError
from persona_agent.programs.profile import ProfileBuilder
from persona_agent.testing import ScriptedLM
from persona_agent.workspace import Workspace
from tests.support import CONCISE, PROFILE, UPDATE, history, make_workspace, persona_script

USER, OTHER = "forget-me-7f3a", "keep-me-2b9c"


def _duckdb_mentions(path, needle: str) -> dict[str, int]:
    """Rows of every table whose any text column mentions `needle`."""
    con = duckdb.connect(str(path), read_only=True)
    found = {}
    for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
        rows = con.execute(f"SELECT * FROM {table}").fetchall()
        hits = sum(needle in json.dumps(row, default=str) for row in rows)
        if hits:
            found[table] = hits
    con.close()
    return found


def _sqlite_mentions(path, needle: str) -> dict[str, int]:
    con = sqlite3.connect(path)
    found = {}
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        hits = sum(needle in json.dumps(row, default=str) for row in con.execute(f"SELECT * FROM {table}"))
        if hits:
            found[table] = hits
    con.close()
    return found


def _files_mentioning(root, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and (needle in p.name or needle.encode() in p.read_bytes())]


def test_forget_leaves_no_trace_anywhere(tracking_home, embedder):
    ws: Workspace = make_workspace(embedder, lm=ScriptedLM(persona_script()), mlflow_register_models=True)
    db = ws.settings.resolved_db_path
    try:
        for user in (USER, OTHER):
            ws.store.add(user, history())
            with ws.lm_context():
                ProfileBuilder().build(ws.store, user)
            ws.respond(user, "hello")  # caches the program and builds the user's FAISS partition
            ws.store.search(user, "question", k=2)
            compile_user(ws, user, CompileOptions())
        ws.rollback(USER)
        ws.respond(USER, "again")  # the rollback dropped the cached program: cache the new live one
        assert _duckdb_mentions_open(ws, USER) and ws.tracker.client.search_registered_models()
        assert USER in ws.programs.users() and USER in ws.store._index.cached_users()

        report = ws.forget(USER)

        assert (report.interactions, report.vectors, report.profiles) == (4, 4, 1)
        assert report.extra["personas"] == 3 and report.extra["persona_live"] == 1
        assert report.extra["mlflow_runs"] == 3 and report.extra["mlflow_registered_models"] == 1
        assert report.extra["mlflow_model_versions"] == 2 and report.extra["cached_programs"] >= 1
        # caches and FAISS
        assert USER not in ws.programs.users() and USER not in ws.store._index.cached_users()
        # MLflow, through its API
        client = ws.tracker.client
        assert ws.tracker.user_runs(USER) == []
        assert [m.name for m in client.search_registered_models()] == [f"persona-{OTHER}"]
        # the other user is untouched
        assert ws.store.count(OTHER) == 4 and ws.registry.live(OTHER).version == 1
        assert len(ws.tracker.user_runs(OTHER)) == 2  # v0 (logged by the compile) and v1
        # forgetting again removes nothing more
        assert ws.forget(USER).total == 0
    finally:
        ws.close()
    # and on disk: no row of any table, in either database, and no artifact file names or holds the user
    assert _duckdb_mentions(db, USER) == {}
    assert _duckdb_mentions(db, OTHER)
    assert _sqlite_mentions(tracking_home / "mlflow.db", USER) == {}
    assert _sqlite_mentions(tracking_home / "mlflow.db", OTHER)
    artifacts = tracking_home / "mlartifacts"
    assert _files_mentioning(artifacts, USER) == [] and _files_mentioning(artifacts, OTHER)


def _duckdb_mentions_open(ws: Workspace, needle: str) -> bool:
    rows = ws.store.cursor().execute("SELECT count(*) FROM personas WHERE user_id = ?", [needle]).fetchall()
    return rows[0][0] > 0


# -- raw bytes on disk ------------------------------------------------------------------------------------

MARK = "qz7mark4d1e"  # in the forgotten user's id, rows and persona: it must leave every file under the home
KEEP = "kp3keep9b0c"  # the other user's: it must stay


def _files_holding(root, needle: str) -> dict[str, int]:
    """Every file under `root` whose raw bytes (or name) hold `needle`, with the count of copies."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            hits = path.read_bytes().count(needle.encode()) + (needle in path.name)
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def _compiled_pair(home, embedder, **settings) -> Workspace:
    """Two users with rows, a profile, a compiled persona (tracked, registered), each marked in every text."""
    script = persona_script()
    mark_of = lambda text: MARK if MARK in text else KEEP  # noqa: E731
    script[PROFILE] = lambda call: {"profile": f"Likes brevity and {mark_of(call.inputs['records'])}."}
    script[UPDATE] = lambda call: {"new_persona": f"{CONCISE}\nTalks about {mark_of(call.inputs['persona'])}."}
    lm = ScriptedLM(script)
    ws = make_workspace(embedder, lm=lm, mlflow_register_models=True, lm_cache=False, **settings)
    for user, mark in ((f"user-{MARK}", MARK), (f"user-{KEEP}", KEEP)):
        rows = [{**row, "query": f"{row['query']} about {mark}", "response": f"ok {mark}"} for row in history()]
        ws.store.add(user, rows)
        with ws.lm_context():
            ProfileBuilder().build(ws.store, user)
        compile_user(ws, user, CompileOptions())
    assert _files_holding(home, MARK)  # the marker is on disk before the forget: the grep can see it
    return ws


def _assert_keeper_intact(ws: Workspace) -> None:
    keeper = f"user-{KEEP}"
    assert ws.store.count(keeper) == 4 and ws.registry.live(keeper).version == 1
    hits = ws.store.search(keeper, f"question 2 about {KEEP}", k=4)
    assert len(hits) == 4 and all(KEEP in h.interaction.query for h in hits)
    assert len(ws.tracker.user_runs(keeper)) == 2  # v0 (logged by the compile) and v1


def test_forget_leaves_no_byte_of_the_user_on_disk_once_the_timer_compacts(tracking_home, embedder):
    ws = _compiled_pair(tracking_home, embedder, compaction_delay_seconds=2)
    try:
        before = datetime.now(UTC).replace(tzinfo=None)
        report = ws.forget(f"user-{MARK}")
        assert before < report.erased_by <= before + timedelta(seconds=2.5)
        assert ws.store.compaction_due == report.erased_by and ws.store.compactions == 0
        while ws.store.compaction_due is not None:  # the timer compacts by the reported time (give it slack)
            assert datetime.now(UTC).replace(tzinfo=None) < report.erased_by + timedelta(seconds=10)
            time.sleep(0.1)
        assert ws.store.compactions == 1
        # the store is still open: its file, its WAL, mlflow.db and the artifacts hold no byte of the user
        assert _files_holding(tracking_home, MARK) == {}
        assert _files_holding(tracking_home, KEEP)
        _assert_keeper_intact(ws)
        ws.store.add(f"user-{KEEP}", [{"query": f"after the compaction {KEEP}"}])  # writes go on
        assert ws.store.count(f"user-{KEEP}") == 5
    finally:
        ws.close()
    assert _files_holding(tracking_home, MARK) == {}


def test_close_compacts_a_pending_forget(tracking_home, embedder):
    ws = _compiled_pair(tracking_home, embedder, compaction_delay_seconds=3600)
    try:
        report = ws.forget(f"user-{MARK}")
        assert report.erased_by > datetime.now(UTC).replace(tzinfo=None) + timedelta(minutes=59)
        left = _files_holding(tracking_home, MARK)  # the store's file or WAL: its compaction is pending
        assert left and all(name.startswith("memory.duckdb") for name in left)  # MLflow's side is gone at once
    finally:
        ws.close()
    assert _files_holding(tracking_home, MARK) == {}
    ws = make_workspace(embedder, lm=ScriptedLM(persona_script()))
    try:
        assert ws.store.compaction_due is None
        _assert_keeper_intact(ws)
    finally:
        ws.close()


def test_cli_forget_erases_the_bytes_before_it_returns(tracking_home, embedder, monkeypatch):
    from typer.testing import CliRunner

    from persona_agent import cli

    monkeypatch.setattr(cli, "open_workspace", lambda settings, *, needs_lm: Workspace(settings, embedder=embedder))
    ws = make_workspace(embedder, compaction_delay_seconds=3600)
    for user, mark in ((f"user-{MARK}", MARK), (f"user-{KEEP}", KEEP)):
        ws.store.add(user, [{"query": f"{row['query']} about {mark}"} for row in history()])
    ws.close()  # the CLI is another process: the writer lets go of the file
    result = CliRunner().invoke(cli.app, ["forget", "--user", f"user-{MARK}", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Erased from disk:" in result.stdout and "UTC" in result.stdout
    assert _files_holding(tracking_home, MARK) == {} and _files_holding(tracking_home, KEEP)


def _locked(*args, **kwargs):
    from mlflow.exceptions import MlflowException

    raise MlflowException("(sqlite3.OperationalError) database is locked", error_code="INTERNAL_ERROR")


def test_forget_skips_only_what_mlflow_does_not_hold_and_reports_any_other_refusal(
    tracking_home, embedder, monkeypatch
):
    """Erasure treats a registered model or run MLflow does not hold as gone (a second forget, a delete in MLflow's
    UI); any other refusal is a `TrackingError` naming what is left, never a report of an erasure that did not
    happen, and forgetting again finishes it."""
    ws = make_workspace(embedder, mlflow_register_models=True)
    try:
        ws.store.add(USER, history())
        compile_user(ws, USER, CompileOptions())
        client = ws.tracker.client
        with monkeypatch.context() as patch:
            patch.setattr(client, "delete_registered_model", _locked)
            with pytest.raises(TrackingError, match=f"persona-{USER}.*database is locked"):
                ws.forget(USER)
        assert client.search_registered_models() and len(ws.tracker.user_runs(USER)) == 2
        with monkeypatch.context() as patch:
            patch.setattr(client, "get_run", _locked)
            with pytest.raises(TrackingError, match=r"MLflow run [0-9a-f]{32}: .*database is locked"):
                ws.forget(USER)
        assert not client.search_registered_models() and len(ws.tracker.user_runs(USER)) == 2
        report = ws.forget(USER)
        assert report.extra["mlflow_runs"] == 2 and ws.tracker.user_runs(USER) == []
    finally:
        ws.close()
