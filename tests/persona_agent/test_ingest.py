"""`persona-agent ingest` (issue 37 points 5 and 6): every hostile input of point 6 exits 2 with a message naming
the file, the line and the field, and writes nothing; a file is one transaction, and running it again adds
nothing and says how many it skipped. Real DuckDB and MiniLM, through Typer's runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persona_agent import cli
from persona_agent.core.config import Settings
from persona_agent.stores import MemoryStore
from persona_agent.workspace import Workspace

runner = CliRunner()
GOOD = {"user_id": "alice", "query": "a good first line", "response": "ok", "created_at": 1_700_000_000}
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(autouse=True)
def _store_only(monkeypatch, embedder):
    """Commands get the session's loaded embedder (no LM: ingest needs none); messages are not wrapped."""
    monkeypatch.setattr(cli, "open_workspace", lambda settings, *, needs_lm: Workspace(settings, embedder=embedder))
    monkeypatch.setenv("COLUMNS", "2000")


def run(*args: str):
    return runner.invoke(cli.app, ["ingest", *args])


def rows_stored(embedder) -> int:
    path = Settings().resolved_db_path
    if not path.exists():
        return 0
    with MemoryStore(path, embedder=embedder) as store:
        return store.count()


def jsonl(*lines: str) -> bytes:
    return "".join(line + "\n" for line in (json.dumps(GOOD), *lines)).encode()


def field(name: str, value: str) -> str:
    """A JSONL line whose `name` is the raw JSON `value` (escapes such as \\ud800 kept as JSON has them)."""
    return '{"user_id": "alice", "query": "q", ' + json.dumps(name) + ": " + value + "}"


CASES = [
    ("created_at 1e20", "a.jsonl", jsonl(field("created_at", "1e20")), "line 2", "created_at"),
    ("created_at -1e13", "a.jsonl", jsonl(field("created_at", "-1e13")), "line 2", "created_at"),
    ("created_at year 0", "a.jsonl", jsonl(field("created_at", '"0001-01-01T00:00:00+05:00"')), "line 2", "created_at"),
    ("created_at true", "a.jsonl", jsonl(field("created_at", "true")), "line 2", "created_at"),
    ("lone surrogate", "a.jsonl", jsonl('{"user_id": "alice", "query": "a\\ud800"}'), "line 2", "query"),
    ("surrogate in metadata", "a.jsonl", jsonl(field("metadata", '{"k": "\\udc00"}')), "line 2", "metadata.k"),
    ("NUL", "a.jsonl", jsonl('{"user_id": "alice", "query": "q", "response": "a\\u0000"}'), "line 2", "response"),
    (
        "deep metadata",
        "a.jsonl",
        jsonl(field("metadata", '{"x": ' + "[" * 100 + "]" * 100 + "}")),
        "line 2",
        "metadata.x",
    ),
    ("deep line", "a.jsonl", jsonl(field("metadata", DEEP)), "line 2", "(json)"),
    ("NaN", "a.jsonl", jsonl(field("metadata", '{"x": NaN}')), "line 2", "(json)"),
    ("user list", "a.jsonl", jsonl('{"user_id": ["alice"], "query": "q"}'), "line 2", "user_id"),
    ("user true", "a.jsonl", jsonl('{"user_id": true, "query": "q"}'), "line 2", "user_id"),
    ("user NUL", "a.jsonl", jsonl('{"user_id": "al\\u0000ice", "query": "q"}'), "line 2", "user_id"),
    ("invalid UTF-8", "a.jsonl", jsonl() + b'{"user_id": "alice", "query": "\xff"}\n', "line 2", "(encoding)"),
    ("CSV field over 131k", "a.csv", b"user_id,query\nalice,ok\nalice," + b"x" * 140_000 + b"\n", "line 3", "(csv)"),
    ("CSV invalid UTF-8", "a.csv", b"user_id,query\nalice,ok\nalice,\xed\xa0\x80\n", "line 3", "(encoding)"),
    ("CSV created_at 1e20", "a.csv", b"user_id,query,created_at\nalice,ok,\nalice,q,1e20\n", "line 3", "created_at"),
    ("CSV created_at -1e13", "a.csv", b"user_id,query,created_at\nalice,ok,\nalice,q,-1e13\n", "line 3", "created_at"),
]


@pytest.mark.parametrize(("name", "suffix", "content", "line", "field_name"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_exits_2_naming_file_line_and_field_and_writes_nothing(
    tmp_path, embedder, name, suffix, content, line, field_name
):
    path = tmp_path / suffix
    path.write_bytes(content)
    result = run(str(path))
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2, (result.exit_code, message)
    assert re.search(re.escape(f"{path}: record {line}: field '{field_name}") + r"(\.0)*'", message), message
    assert "Error:" not in message  # a typed error's message, not an exception's type name
    assert rows_stored(embedder) == 0


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("dated", [True, False])
def test_running_the_same_file_again_adds_nothing_and_says_so(tmp_path, embedder, dated):
    rows = [
        {
            "user_id": f"u{i % 2}",
            "query": f"question {i}",
            "response": "ok",
            **({"created_at": 1e9 + i} if dated else {}),
        }
        for i in range(6)
    ]
    path = write(tmp_path / "a.jsonl", rows + rows[:2])  # two lines repeated within the file
    first = run(str(path))
    assert first.exit_code == 0, first.output
    assert "Stored 6 interactions for 2 users; skipped 2 duplicates" in first.stdout
    again = run(str(path))
    assert again.exit_code == 0 and "Stored 0 interactions for 2 users; skipped 8 duplicates" in again.stdout
    assert rows_stored(embedder) == 6
    more = run(str(write(tmp_path / "b.jsonl", [*rows, {"user_id": "u0", "query": "a new one"}])))
    assert "Stored 1 interactions" in more.stdout and rows_stored(embedder) == 7
