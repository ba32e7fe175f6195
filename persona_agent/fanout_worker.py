"""The worker side of a compile fan-out (`persona_agent.fanout`): run the optimizer, write nothing, return the
persona it found and its trace.

`optimize_plan` runs in a thread of the driver's process over the driver's plan. `optimize_snapshot` runs in
another process (a Ray task): it rebuilds the student over an in-memory store holding the user's snapshot, with
an LM and embedder it makes once per process (`WorkerSetup`) and its own DSPy cache folder. With a local model
spec the task's LM forwards to the one model host actor of its node (`persona_agent.lm.hosted`): one llama.cpp
model per worker process would thrash.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dspy

from persona_agent.compiling import CompileOptions, CompilePlan, optimizer_of
from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError
from persona_agent.lm.hosted import hosted_lm
from persona_agent.lm.models import adapter_for, make_lm
from persona_agent.lm.specs import parse_spec
from persona_agent.programs.saved import ProgramFactory
from persona_agent.stores.embeddings import Embedder, SentenceTransformerEmbedder
from persona_agent.stores.memory import MemoryStore
from persona_agent.workspace import Workspace

__all__ = ["Optimized", "Snapshot", "WorkerSetup", "optimize_plan", "optimize_snapshot"]


@dataclass(frozen=True)
class Optimized:
    """A worker's result: the persona the optimizer returned (None: it kept none), its trace, its seconds."""

    user_id: str
    persona_text: str | None
    trace: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class Snapshot:
    """A user's compile inputs as plain data: options, the student's saved program, the alignment batch, and
    the memory its tools search (interactions and profile)."""

    user_id: str
    options: dict[str, Any]
    document: dict[str, Any]
    trainset: list[dict[str, Any]]
    input_keys: list[str]
    interactions: list[dict[str, Any]]
    profile: str | None = None


@dataclass(frozen=True)
class WorkerSetup:
    """How a worker process builds its parts (each once per process): the LM and the memory embedder (default:
    the settings' embedder). Factories must pickle (module-level).

    The LM: `lm()` when given; for a local spec ('local', 'gguf:/path') an LM forwarding to the node's model host,
    whose engine `host()` builds (default: the settings' local engine; a test passes a fake); else `make_lm`."""

    settings: Settings
    lm: Callable[[], dspy.BaseLM] | None = None
    embedder: Callable[[], Embedder] | None = None
    host: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        if self.host is not None and (self.lm is not None or parse_spec(self.settings.lm).kind == "litellm"):
            raise InvalidInputError("host", self.host, "needs a local LM spec and no `lm` factory")

    def key(self) -> tuple[str, ...]:
        name = lambda f: f"{f.__module__}.{f.__qualname__}" if f is not None else "-"  # noqa: E731
        return (self.settings.model_dump_json(), name(self.lm), name(self.embedder), name(self.host))

    def make_lm(self, settings: Settings) -> dspy.BaseLM:
        """This worker's LM under `settings` (the setup's, with the worker's own cache folder)."""
        if self.lm is not None:
            return self.lm()
        if parse_spec(settings.lm).kind == "litellm":
            return make_lm(settings=settings)
        return hosted_lm(settings, self.host)


def optimize_plan(workspace: Workspace, plan: CompilePlan) -> Optimized:
    """Run a plan's optimizer in this process under the workspace's LM (reads only)."""
    started = time.perf_counter()
    with workspace.lm_context():
        compiled = plan.optimizer.compile(plan.student, trainset=plan.trainset)
    return _optimized(plan.user_id, compiled, started)


def _optimized(user_id: str, compiled: Any, started: float) -> Optimized:
    persona = getattr(compiled, "persona", None)
    trace = dict(getattr(compiled, "alignment_trace", {}) or {})
    text = persona.text if persona is not None else None
    return Optimized(user_id, text, trace, time.perf_counter() - started)


_PARTS: dict[tuple[str, ...], tuple[dspy.BaseLM, Embedder, Settings]] = {}
_PARTS_LOCK = threading.Lock()


def _parts(setup: WorkerSetup) -> tuple[dspy.BaseLM, Embedder, Settings]:
    """This process's LM, embedder and settings (with a DSPy cache folder of its own), made on first use."""
    key = setup.key()
    with _PARTS_LOCK:
        if key not in _PARTS:
            base = setup.settings.resolved_cache_dir
            settings = setup.settings.model_copy(update={"cache_dir": base / "workers" / str(os.getpid())})
            lm = setup.make_lm(settings)
            embedder = (
                setup.embedder() if setup.embedder is not None else SentenceTransformerEmbedder(settings.embedder)
            )
            _PARTS[key] = (lm, embedder, settings)
        return _PARTS[key]


def _rows(snapshot: Snapshot) -> list[dict[str, Any]]:
    return [
        {**row, "created_at": row["created_at"].isoformat()} if isinstance(row["created_at"], datetime) else row
        for row in snapshot.interactions
    ]


def optimize_snapshot(snapshot: Snapshot, setup: WorkerSetup) -> Optimized:
    """Run the optimizer on a snapshot, in any process: the student answers from an in-memory copy of the
    user's memory, so the driver's database is never opened here."""
    started = time.perf_counter()
    lm, embedder, settings = _parts(setup)
    store = MemoryStore(":memory:", embedder=embedder, settings=settings)
    try:
        user = snapshot.user_id
        if snapshot.interactions:
            store.add(user, _rows(snapshot))
        if snapshot.profile:
            store.set_profile(user, snapshot.profile)
        student = ProgramFactory(store=store).build(snapshot.document, user_id=user)
        trainset = [dspy.Example(**row).with_inputs(*snapshot.input_keys) for row in snapshot.trainset]
        optimizer = optimizer_of(CompileOptions(**snapshot.options))
        with dspy.context(lm=lm, adapter=adapter_for(lm)):
            compiled = optimizer.compile(student, trainset=trainset)
    finally:
        store.close()
    return _optimized(snapshot.user_id, compiled, started)
