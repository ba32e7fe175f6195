"""The results log survives a torn last line (and refuses silent loss elsewhere); the state cache is atomic,
per user and never committed."""

from __future__ import annotations

import json

import pytest

from persona_agent.errors import EvalLogError
from persona_agent.evaluation.persist import ResultLog, StateCache, latest_rows, row_key


def prediction(method: str, query: str, error: str | None = None) -> dict:
    return {"kind": "prediction", "method": method, "user_id": "u1", "query_id": query, "error": error}


def test_rows_append_and_the_last_one_for_a_key_wins(tmp_path):
    log = ResultLog(tmp_path / "run" / "predictions.jsonl")
    assert log.load() == []
    log.append({"kind": "meta", "methods": ["rag"]})
    log.append(prediction("rag", "q1", error="AdapterParseError: ..."))
    log.append(prediction("rag", "q2"))
    log.append(prediction("rag", "q1"))  # the retried example
    rows = log.load()
    assert len(rows) == 4
    latest = latest_rows(rows)
    assert latest[("prediction", "rag", "u1", "q1")]["error"] is None
    assert list(latest) == [("meta",), ("prediction", "rag", "u1", "q1"), ("prediction", "rag", "u1", "q2")]
    assert row_key({"kind": "setup", "stage": "profile", "user_id": "u1"}) == ("setup", "profile", "u1")


def test_a_torn_last_line_is_cut_and_a_lost_newline_restored(tmp_path):
    path = tmp_path / "predictions.jsonl"
    log = ResultLog(path)
    log.append(prediction("rag", "q1"))
    with path.open("a") as handle:
        handle.write('{"kind": "prediction", "meth')
    assert len(log.load()) == 1 and path.read_text().endswith("}\n")
    log.append(prediction("rag", "q2"))
    assert [r["query_id"] for r in log.load()] == ["q1", "q2"]

    path.write_text(json.dumps(prediction("rag", "q1")))  # a whole row whose newline was lost
    assert len(log.load()) == 1
    log.append(prediction("rag", "q2"))
    assert [r["query_id"] for r in log.load()] == ["q1", "q2"]


def test_damage_before_the_last_line_is_an_error_not_a_silent_loss(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"kind": "meta"}\nnot json\n{"kind": "meta"}\n')
    with pytest.raises(EvalLogError, match="line 2"):
        ResultLog(path).load()
    assert path.read_text().count("\n") == 3  # untouched


def test_state_is_per_user_atomic_and_git_ignored(tmp_path):
    cache = StateCache(tmp_path / "state")
    assert cache.load("A2IBPI20UZIR0U") == {}
    cache.save("A2IBPI20UZIR0U", {"profile": {"text": "Plays bass."}})
    cache.save("a2ibpi20uzir0u", {"profile": {"text": "Another user, same slug."}})
    assert cache.load("A2IBPI20UZIR0U")["profile"]["text"] == "Plays bass."
    assert cache.load("a2ibpi20uzir0u")["profile"]["text"] == "Another user, same slug."
    files = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert files[0] == ".gitignore" and len(files) == 3 and not any(".tmp" in f for f in files)
    assert (tmp_path / "state" / ".gitignore").read_text().splitlines()[-1] == "*"
    victim = next(p for p in (tmp_path / "state").iterdir() if p.suffix == ".json")
    victim.write_text("{broken")
    assert {cache.load("A2IBPI20UZIR0U") == {}, cache.load("a2ibpi20uzir0u") == {}} == {True, False}
