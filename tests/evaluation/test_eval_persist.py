"""The results log survives a torn last line (and refuses silent loss elsewhere); the state cache is atomic,
per user and never committed."""

from __future__ import annotations

import json

import pytest

from persona_agent.core.records import user_key
from persona_agent.evaluation.errors import EvalLogError
from persona_agent.evaluation.persist import LOG_FORMAT, ResultLog, StateCache, latest_rows, row_key


def prediction(method: str, query: str, error: str | None = None) -> dict:
    return {"kind": "prediction", "method": method, "user": "u1", "query_id": query, "error": error}


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
    assert row_key({"kind": "setup", "stage": "profile", "user": "u1"}) == ("setup", "profile", "u1")


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


def test_user_keys_are_stable_per_task_and_hide_the_id():
    key = user_key("LaMP-3", "A2IBPI20UZIR0U")
    assert key == user_key("LaMP-3", "A2IBPI20UZIR0U") and key.startswith("u-") and len(key) == 14
    assert "A2IBPI20UZIR0U".lower() not in key.lower()
    assert key != user_key("LaMP-2N", "A2IBPI20UZIR0U") != user_key("LaMP-3", "a2ibpi20uzir0u")


def _format_1_log() -> list[dict]:
    meta = {
        "kind": "meta",
        "format": "persona_agent.eval/1",
        "identity": {"format": "persona_agent.eval/1", "task": "LaMP-3", "users": 2},
        "config": {"task": "LaMP-3"},
        "users": ["ann", "ben"],
        "queries": {"ann": ["r1", "r2"], "ben": ["r9"]},
    }
    setup = {"kind": "setup", "task": "LaMP-3", "stage": "profile", "user_id": "ann", "calls": 1}
    rows = [{**prediction("rag", q), "task": "LaMP-3", "user_id": u} for u, q in (("ann", "r1"), ("ben", "r9"))]
    return [meta, setup, *rows]


def test_a_format_1_log_is_upgraded_in_place_once(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in _format_1_log()))
    rows = ResultLog(path).load()
    ann, ben = user_key("LaMP-3", "ann"), user_key("LaMP-3", "ben")
    meta = rows[0]
    assert meta["format"] == meta["identity"]["format"] == LOG_FORMAT
    assert meta["users"] == [ann, ben] and meta["queries"] == {ann: ["r1", "r2"], ben: ["r9"]}
    assert [r.get("user") for r in rows[1:]] == [ann, ann, ben]
    assert all("user_id" not in r for r in rows)
    assert list(latest_rows(rows))[1:] == [
        ("setup", "profile", ann),
        ("prediction", "rag", ann, "r1"),
        ("prediction", "rag", ben, "r9"),
    ]
    text = path.read_text()
    assert '"ann"' not in text and '"ben"' not in text and text.count("\n") == 4
    assert ResultLog(path).load() == rows and path.read_text() == text  # already current: left alone


def test_a_log_of_an_unknown_format_is_refused_untouched(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text(json.dumps({"kind": "meta", "format": "persona_agent.eval/9"}) + "\n")
    with pytest.raises(EvalLogError, match="eval/9"):
        ResultLog(path).load()
    assert "eval/9" in path.read_text()
