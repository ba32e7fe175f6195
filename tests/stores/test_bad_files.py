"""A database file or home folder in a bad but realistic state: the store refuses it with a `StoreError` that names
the file and says what to do, before writing anything; never a raw OSError or duckdb exception."""

from __future__ import annotations

import pytest

from persona_agent.core.config import Settings
from persona_agent.core.errors import StoreError
from persona_agent.stores import MemoryStore


def test_a_home_that_is_a_regular_file_is_a_store_error_naming_it(tmp_path, embedder, monkeypatch):
    home = tmp_path / "home"
    home.write_text("not a folder")
    monkeypatch.setenv("PERSONA_AGENT_HOME", str(home))
    for settings in (Settings(), Settings(home=home / "nested")):
        with pytest.raises(StoreError, match="PERSONA_AGENT_HOME") as caught:
            MemoryStore(settings=settings, embedder=embedder)
        assert str(home) in str(caught.value)
    assert home.read_text() == "not a folder"
