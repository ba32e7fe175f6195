"""Test-wide settings: offline model hubs, LiteLLM's local cost map, and an isolated home folder."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own PERSONA_AGENT_HOME so no test reads another's state."""
    monkeypatch.setenv("PERSONA_AGENT_HOME", str(tmp_path / "home"))
    yield


@pytest.fixture(scope="session")
def embedder():
    """The real default embedder (bundled all-MiniLM-L6-v2), loaded once per test session."""
    from persona_agent.stores.embeddings import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder()
    model.encode(["warm up"])
    return model
