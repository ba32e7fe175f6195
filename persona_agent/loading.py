"""`load_program`: a user's compiled persona program, ready to call, in one line.

    agent = persona_agent.load_program("alice")                  # the live version, from the registry
    agent = persona_agent.load_program("alice", 3)               # a version number, or "latest" / "champion"
    agent = persona_agent.load_program("alice", "prompts:/persona.alice@live")  # or models:/, runs:/, a run id
    with dspy.context(lm=my_lm):
        print(agent(request="...").response)

Registry versions come from DuckDB through the workspace's program cache (no MLflow round-trip; a warm load
is a copy of the cached agent). Without `workspace`, one process-wide workspace per database file is opened
on first use (DuckDB: one writer process per file) and kept until `close_default_workspaces()`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import dspy

from persona_agent.core.config import Settings
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.stores.personas import VersionRef
from persona_agent.workspace import Workspace

_defaults: dict[str, Workspace] = {}
_lock = threading.Lock()


def default_workspace(settings: Settings | None = None) -> Workspace:
    """The process-wide workspace for the settings' database file, opened on first use."""
    settings = settings or Settings()
    key = str(settings.resolved_db_path.resolve())
    with _lock:
        workspace = _defaults.get(key)
        if workspace is None:
            workspace = _defaults[key] = Workspace(settings)
        return workspace


def close_default_workspaces() -> None:
    """Close every workspace `default_workspace` opened (their DuckDB files become free for other processes)."""
    with _lock:
        for workspace in _defaults.values():
            workspace.close()
        _defaults.clear()


def load_program(
    user_id: str,
    version: VersionRef | Path = None,
    *,
    workspace: Workspace | None = None,
    settings: Settings | None = None,
    signature: type[dspy.Signature] | None = None,
) -> PersonaAgent:
    """A ready `PersonaAgent` for `user_id`, to keep and change as you like (it is your own copy).

    `version`: None or "live"/"champion" (the live version), "latest", a version number, an MLflow run id,
    a `runs:/`, `models:/` or `prompts:/` URI, or a saved program JSON file. `signature` is only needed for a program saved
    with a task signature this package does not know. The agent answers with the LM of the caller's DSPy
    context (`dspy.context(lm=...)` or `dspy.configure`).
    """
    workspace = workspace or default_workspace(settings)
    return workspace.load_program(user_id, version, signature=signature)
