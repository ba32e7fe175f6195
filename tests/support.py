"""Shared helpers for the registry, tracking, CLI and service tests: a scripted LM whose answers depend on the
persona it is given, workspaces over a real store, and MLflow tracking in the test's home.

Creating an MLflow sqlite database runs its migrations (seconds), so one migrated database is made per
session and copied into each test's home.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from persona_agent.core.config import Settings
from persona_agent.testing import ScriptedLM
from persona_agent.workspace import Workspace

ADMIN_KEY = "tG7-Xq2vLm9Rk4Wz8Ns1Bd6Hc3Pf5Yj0"  # strong enough for the service (24+ chars, 96+ bits)

REACT = "request, trajectory -> next_thought, next_tool_name, next_tool_args"
ANSWER = "request, trajectory -> response"
LOSS = "persona, request, simulated_response, ground_truth_response -> matches, critique"
GRADIENT = "persona, losses -> gradient"
UPDATE = "persona, gradient, max_chars -> new_persona"
PROFILE = "records, existing_profile, max_words -> profile"
CONCISE = "## User profile\nWants very concise answers.\n\n## Agent instructions\nAnswer in two words."
SHORT, LONG = "Short answer.", "A long and detailed answer."
SECRET = "sk-test-SECRET-0123456789"
T0 = datetime(2024, 1, 1)
# A real echo from the offline model (LaMP-2N user 6's profile): SummarizeProfile's own instructions handed back.
PROFILE_ECHO = (
    "The user's profile as short statements, summarising their stable, long-term preferences, topics, tastes, "
    "the labels or ratings they tend to give and when, and their style."
)


def persona_script(new_persona: str = CONCISE) -> dict:
    """Finish the tool loop at once; answer SHORT when the persona asks for concision, else LONG; the alignment
    calls propose `new_persona`."""

    def answer(call):
        return {"response": SHORT if "concise" in call.messages[0]["content"] else LONG}

    return {
        REACT: {"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}},
        ANSWER: answer,
        LOSS: {"matches": False, "critique": "The user wanted a much shorter answer."},
        GRADIENT: {"gradient": "- the user wants concise answers"},
        UPDATE: {"new_persona": new_persona},
        PROFILE: {"profile": "Likes brevity."},
    }


def scripted_lm(new_persona: str = CONCISE) -> ScriptedLM:
    lm = ScriptedLM(persona_script(new_persona))
    lm.kwargs["api_key"] = SECRET  # as an LM configured with a key would hold it: it must never be saved
    return lm


def museum_lm(proposal: str | Callable[[Any], str]) -> ScriptedLM:
    """CategorizeArticle under GEPA: answers `culture & arts` when the persona mentions museums, else
    `politics`; every critique asks for culture & arts; GEPA's reflection (a raw LM call) proposes `proposal`
    (or what `proposal` makes of the reflection call)."""
    return ScriptedLM(
        {
            "article, trajectory -> next_thought, next_tool_name, next_tool_args": {
                "next_thought": "t",
                "next_tool_name": "finish",
                "next_tool_args": {},
            },
            "article, trajectory -> category": lambda call: {
                "category": "culture & arts" if "museums" in call.messages[0]["content"] else "politics"
            },
            LOSS: {"matches": False, "critique": "The user files these under culture & arts."},
            "*": lambda call: {"text": f"```\n{proposal(call) if callable(proposal) else proposal}\n```"},
        }
    )


def opera_history(n: int = 4) -> list[dict]:
    """Articles the user filed under culture & arts, a day apart."""
    return [
        {
            "query": f"A new opera house opens, part {i}",
            "response": "culture & arts",
            "created_at": T0 + timedelta(days=i),
        }
        for i in range(n)
    ]


def history(n: int = 4, response: str = "ok") -> list[dict]:
    return [{"query": f"question {i}", "response": response, "created_at": T0 + timedelta(days=i)} for i in range(n)]


@contextlib.contextmanager
def held_by_another_process(path: Path) -> Iterator[Path]:
    """`path` opened for writing by another DuckDB process (as `persona-agent serve` holds it while it runs)."""
    hold = "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('holding', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        yield path
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def make_workspace(embedder, lm=None, **settings) -> Workspace:
    """A workspace in the test's home (PERSONA_AGENT_HOME), over a real store with the session embedder."""
    return Workspace(Settings(**settings), embedder=embedder, lm=lm if lm is not None else scripted_lm())


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow sqlite database, made once per session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_home(mlflow_template, tmp_path, monkeypatch) -> Path:
    """This test's home with a copy of the migrated MLflow database where Settings() expects it."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    shutil.copy(mlflow_template, home / "mlflow.db")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return home
