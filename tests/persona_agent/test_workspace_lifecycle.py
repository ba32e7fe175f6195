"""The workspace owns a persona version's lifecycle: one commit, under one lock, that a forget overtakes; and the
entry modules around it import one way (no cycle hidden in a function)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest

import persona_agent
from persona_agent.lifecycle import CompileCancelledError, Draft
from tests.support import CONCISE, history, make_workspace

ENTRY = Path(persona_agent.__file__).parent
BELOW_THE_ENTRY = {"workspace", "lifecycle", "reconciling", "answering", "program_cache"}
ABOVE = {"forgetting", "compiling", "loading", "workspace"}


@pytest.fixture
def workspace(tracking_home, embedder):
    ws = make_workspace(embedder)
    ws.store.add("alice", history())
    ws.ensure_persona("alice")
    yield ws
    ws.close()


def _imports(module: str) -> set[str]:
    tree = ast.parse((ENTRY / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):  # every import, also those inside functions
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("module", sorted(BELOW_THE_ENTRY))
def test_the_lifecycle_modules_never_import_the_modules_built_on_them(module):
    above = {f"persona_agent.{name}" for name in ABOVE if name != module}
    if module != "workspace":
        above.add("persona_agent.workspace")
    assert not _imports(module) & above


def test_a_commit_after_a_forget_writes_nothing(workspace):
    epoch = workspace.forget_epoch("alice")
    agent, _ = workspace.program("alice")
    workspace.forget("alice")
    workspace.store.add("alice", history())  # the user comes back: still, the old compile must not land
    with pytest.raises(CompileCancelledError):
        workspace.commit_version("alice", Draft(CONCISE, agent, 0), epoch=epoch)
    assert workspace.registry.history("alice") == []


def test_a_promote_waits_for_a_commit_in_progress(workspace):
    workspace.registry.add("alice", CONCISE, source="manual", parent=0)
    done = threading.Event()

    def promote() -> None:
        workspace.promote("alice", 1)
        done.set()

    with workspace.commit_lock:
        thread = threading.Thread(target=promote)
        thread.start()
        assert not done.wait(0.3)
    thread.join(10)
    assert done.is_set() and workspace.registry.live("alice").version == 1
