"""Forget everywhere: after `forget`, no trace of the user is left in DuckDB, FAISS, MLflow or any cache, and
other users are untouched."""

from __future__ import annotations

import json
import sqlite3

import duckdb

from persona_agent.compiling import CompileOptions, compile_user
from persona_agent.programs.profile import ProfileBuilder
from persona_agent.testing import ScriptedLM
from persona_agent.workspace import Workspace
from tests.support import history, make_workspace, persona_script

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
        assert report.extra["mlflow_runs"] == 2 and report.extra["mlflow_registered_models"] == 1
        assert report.extra["mlflow_model_versions"] == 2 and report.extra["cached_programs"] >= 1
        # caches and FAISS
        assert USER not in ws.programs.users() and USER not in ws.store._index.cached_users()
        # MLflow, through its API
        client = ws.tracker.client
        assert ws.tracker.user_runs(USER) == []
        assert [m.name for m in client.search_registered_models()] == [f"persona-{OTHER}"]
        # the other user is untouched
        assert ws.store.count(OTHER) == 4 and ws.registry.live(OTHER).version == 1
        assert len(ws.tracker.user_runs(OTHER)) == 1
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
