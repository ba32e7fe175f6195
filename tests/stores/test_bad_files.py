"""A database file or home folder in a bad but realistic state: the store refuses it with a `StoreError` that names
the file and says what to do, before writing anything; never a raw OSError or duckdb exception."""

from __future__ import annotations

import duckdb
import pytest

from persona_agent.core.config import Settings
from persona_agent.core.errors import SchemaVersionError, StoreError
from persona_agent.stores import MemoryStore
from tests.support import held_by_another_process


def tables(path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {name for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


@pytest.fixture
def held(tmp_path):
    """A store file another process holds open for writing (as `persona-agent serve` does while it runs)."""
    with held_by_another_process(tmp_path / "m.duckdb") as path:
        yield path


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_another_process_holds_names_it_and_says_to_stop_that_process(held, embedder, read_only):
    with pytest.raises(StoreError) as caught:
        MemoryStore(held, embedder=embedder, read_only=read_only)
    message = str(caught.value)
    assert str(held) in message and "another process" in message and "PID" in message
    assert "persona-agent serve" in message


@pytest.mark.parametrize("content", [b"", b"\x00\x17not a database at all" * 500], ids=["empty", "garbage"])
def test_a_file_that_is_not_a_duckdb_database_is_left_alone_and_named(tmp_path, embedder, content):
    path = tmp_path / "m.duckdb"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a valid DuckDB database") as caught:
        MemoryStore(path, embedder=embedder)
    assert str(path) in str(caught.value) and "PERSONA_AGENT_DB_PATH" in str(caught.value)
    assert path.read_bytes() == content


def test_a_home_that_is_a_regular_file_is_a_store_error_naming_it(tmp_path, embedder, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("PERSONA_AGENT_HOME", str(home))
    for settings in (Settings(), Settings(home=home / "nested")):
        with pytest.raises(StoreError, match="PERSONA_AGENT_HOME") as caught:
            MemoryStore(settings=settings, embedder=embedder)
        assert str(home) in str(caught.value)
    assert home.read_text() == "not a folder"


def test_another_applications_duckdb_file_is_refused_before_any_write(tmp_path, embedder):
    path = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE interactions (a INTEGER)")
    con.close()
    with pytest.raises(StoreError) as caught:
        MemoryStore(path, embedder=embedder)
    assert str(path) in str(caught.value) and "not a PersonaAgent memory store" in str(caught.value)
    assert tables(path) == {"interactions"}


def test_a_truncated_store_is_a_store_error_naming_the_file(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    with MemoryStore(path, embedder=embedder) as store:
        store.add("alice", [{"query": f"question {i}", "response": "ok"} for i in range(50)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a copy cut short (a full disk, an interrupted transfer)
    with pytest.raises(StoreError, match="damaged") as caught:
        MemoryStore(path, embedder=embedder)
    assert str(path) in str(caught.value)


def test_a_store_from_a_newer_persona_agent_is_refused_read_only_too(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    with MemoryStore(path, embedder=embedder) as store:
        store.add_interaction("alice", "hello", "hi")
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (99, now()::TIMESTAMP)")
    con.close()
    with pytest.raises(SchemaVersionError, match="99"):
        MemoryStore(path, embedder=embedder, read_only=True)
