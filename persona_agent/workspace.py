"""`Workspace`: the one object a process holds to answer, compile and manage personas.

It owns the memory store (DuckDB: one writer process per file), the persona registry in the same file, MLflow
tracking (opened on first use), the LM (made from settings on first use, or given), a factory that builds
agents fast from saved programs, and an LRU of ready programs keyed by (user, version). The CLI and the HTTP
service both work through it, so promote, rollback and forget behave the same from either. A version's lifecycle
(commit, promote, rollback, reconcile, forget) is its mixin `persona_agent.lifecycle.VersionLifecycle`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dspy

from persona_agent.answering import Answer, answer_of, inputs_for
from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, TrackingError, UnknownUserError
from persona_agent.core.usage import track_usage
from persona_agent.lifecycle import Forgettable, PersonaChange, VersionLifecycle
from persona_agent.program_cache import ProgramCache
from persona_agent.programs.persona import Persona, init_persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.saved import (
    KNOWN_SIGNATURES,
    ProgramFactory,
    ProgramSpec,
    owner_of,
    program_document,
    read_document,
    with_program,
)
from persona_agent.stores.embeddings import Embedder
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.personas import LIVE_ALIASES, LiveState, PersonaRecord, PersonaRegistry, VersionRef
from persona_agent.stores.tokens import TokenRevocations
from persona_agent.stores.validation import validate_user_id

logger = logging.getLogger(__name__)
__all__ = ["Answer", "Forgettable", "PersonaChange", "Workspace", "is_external_ref", "persona_of"]


def persona_of(record: PersonaRecord) -> Persona:
    return Persona.from_dict(record.persona_dict())


def is_external_ref(version: object) -> bool:
    """A version given as an MLflow reference (run id, runs:/, models:/ or prompts:/ URI) or a saved JSON file."""
    from persona_agent.tracking.tracker import is_run_id

    if isinstance(version, Path):
        return True
    if not isinstance(version, str):
        return False
    return version.startswith(("runs:/", "models:/", "prompts:/")) or is_run_id(version) or version.endswith(".json")


class Workspace(VersionLifecycle):
    """Store + registry + tracking + LM + program cache, for one process.

    Args:
        settings: where everything lives (default: the environment).
        store: an open memory store to use (default: open the settings' DuckDB file; closed by `close`).
        embedder: the store's embedder when the workspace opens the store.
        lm: the LM to answer and compile with (default: `make_lm(settings.lm)` on first use).
        knowledge: a shared knowledge base for the agents' `search_knowledge` tool.
        spec: the program new users get (signature, tools, iterations); compiled users keep their saved one.
            Default: every tool, with the settings' `task_signature`.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: MemoryStore | None = None,
        embedder: Embedder | None = None,
        lm: dspy.BaseLM | None = None,
        knowledge: KnowledgeBase | None = None,
        spec: ProgramSpec | None = None,
    ) -> None:
        self.settings = settings or (store.settings if store is not None else Settings())
        self.spec = spec or ProgramSpec(signature=KNOWN_SIGNATURES[self.settings.task_signature])
        self._owns_store = store is None
        self.store = store if store is not None else MemoryStore(settings=self.settings, embedder=embedder)
        self.registry = PersonaRegistry(self.store)
        self.revocations = TokenRevocations(self.store)  # service tokens issued before a user's forget are dead
        self.factory = ProgramFactory(store=self.store, knowledge=knowledge)
        self.programs = ProgramCache(self.settings.program_cache_size)
        self._lm = lm
        self._adapter: dspy.Adapter | None = None
        self._tracker = None
        self.opened_at = datetime.now(UTC).replace(tzinfo=None)  # versions older than this are no compile of ours
        self._lock = threading.Lock()
        self._init_lifecycle()  # commit lock, forget epochs, forgettables (persona_agent.lifecycle)

    # -- parts made on first use ----------------------------------------------------------------------

    @property
    def lm(self) -> dspy.BaseLM:
        if self._lm is None:
            with self._lock:
                if self._lm is None:
                    from persona_agent.lm.models import make_lm

                    self._lm = make_lm(settings=self.settings)
        return self._lm

    @property
    def adapter(self) -> dspy.Adapter:
        """The adapter for the LM (`adapter_for`)."""
        if self._adapter is None:
            from persona_agent.lm.models import adapter_for

            self._adapter = adapter_for(self.lm)
        return self._adapter

    def lm_context(self) -> contextlib.AbstractContextManager:
        """This workspace's LM and adapter for one block (a context, never `dspy.configure`)."""
        return dspy.context(lm=self.lm, adapter=self.adapter)

    @property
    def tracker(self):
        """MLflow tracking (`persona_agent.tracking.tracker.Tracker`), imported and connected on first use, when a
        writable workspace also reconciles crash leftovers (`reconcile`; an MLflow failure there is logged)."""
        opened = False
        if self._tracker is None:
            with self._lock:
                if self._tracker is None:
                    from persona_agent.tracking.tracker import Tracker

                    self._tracker, opened = Tracker(self.settings), True
        if opened and not self.store.read_only:
            try:
                self.reconcile()
            except TrackingError as exc:
                logger.error("reconciling crash leftovers failed (call reconcile again): %s", exc)
        return self._tracker

    def tracking_started(self) -> bool:
        """Whether MLflow may hold anything of ours: used, or a tracking database exists."""
        if self._tracker is not None:
            return True
        uri = self.settings.resolved_tracking_uri
        if uri.startswith("sqlite:///"):
            return Path(uri[len("sqlite:///") :]).exists()
        return True

    # -- personas -------------------------------------------------------------------------------------

    def _initial(self, user_id: str) -> tuple[str, dict[str, Any]]:
        persona = init_persona(user_id, self.store.get_profile(user_id))
        return persona.text, program_document(self.factory.for_user(self.spec, user_id, persona))

    def ensure_persona(self, user_id: str) -> LiveState:
        """The user's live pointer; a user without personas gets version 0 from their profile, made live.
        A user the store has never seen is `UnknownUserError`: no request can create personas for anyone."""
        user_id = validate_user_id(user_id)
        live = self.registry.live(user_id)
        if live is not None:
            return live
        self.require_user(user_id)
        state, _ = self.registry.ensure_live(user_id, lambda: self._initial(user_id))
        return state

    def live_version(self, user_id: str) -> int:
        cached = self.programs.live(user_id)
        if cached is not None:
            return cached
        version = self.ensure_persona(user_id).version
        self.programs.set_live(user_id, version)
        return version

    def program(self, user_id: str, version: VersionRef = None) -> tuple[PersonaAgent, int]:
        """The ready agent of a registry version (default: live) and its number; a shared cached instance."""
        user_id = validate_user_id(user_id)
        number = (
            self.live_version(user_id)
            if version is None or version in LIVE_ALIASES
            else self.registry.resolve(user_id, version)
        )
        agent = self.programs.get(user_id, number)
        if agent is not None:
            return agent, number
        return self.programs.put(user_id, number, self.build_agent(user_id, number)), number

    def build_agent(self, user_id: str, number: int, *, allow_updates: bool | None = None) -> PersonaAgent:
        """A new agent of a registry version: its saved program, or the workspace's `spec` for a text-only
        version. `allow_updates` overrides whether it may offer `update_memory` (a compile's student may not)."""
        persona = persona_of(self.registry.get(user_id, number))
        document = self.registry.program(user_id, number)
        if document is None:
            spec = self.spec if allow_updates is None else replace(self.spec, allow_updates=allow_updates)
            return self.factory.for_user(spec, user_id, persona)
        if allow_updates is not None:
            document = with_program(document, allow_updates=allow_updates)
        return self.factory.build(document, user_id=user_id, persona=persona)

    def cached_program(self, user_id: str, version: VersionRef = None) -> tuple[PersonaAgent, int] | None:
        """The program if it is cached (no I/O): the async service's fast path."""
        number = self.programs.live(user_id) if version is None or version in LIVE_ALIASES else version
        if not isinstance(number, int):
            return None
        agent = self.programs.get(user_id, number)
        return (agent, number) if agent is not None else None

    def load_program(
        self, user_id: str, version: VersionRef | Path = None, *, signature: type[dspy.Signature] | None = None
    ) -> PersonaAgent:
        """A ready agent of the user's own to keep and change: a copy of the cached registry version (fast path,
        no MLflow), or one built from an MLflow run id / `runs:/` / `models:/` / `prompts:/` URI (the program
        logged with the version's run) or a saved JSON file."""
        user_id = validate_user_id(user_id)
        if not is_external_ref(version):
            return self.program(user_id, version)[0].deepcopy()
        if isinstance(version, Path) or str(version).endswith(".json"):
            document = read_document(version)
        else:
            document = self.tracker.load_document(str(version))
        owner = owner_of(document)
        if owner is not None and owner != user_id:
            raise InvalidInputError("user_id", user_id, f"the program at {version} belongs to {owner!r}")
        return self.factory.build(document, user_id=user_id, signature=signature)

    # -- answering ------------------------------------------------------------------------------------

    inputs_for = staticmethod(inputs_for)  # the task inputs of a request (`persona_agent.answering`)

    def respond(self, user_id: str, inputs: Mapping[str, Any] | str, *, version: VersionRef = None) -> Answer:
        """Answer with the user's live persona (or `version`)."""
        agent, number = self.program(user_id, version)
        return self.answer_with(agent, number, inputs)

    def answer_with(self, agent: PersonaAgent, number: int, inputs: Mapping[str, Any] | str) -> Answer:
        """Answer with a given agent of version `number` (e.g. the live persona under another program spec),
        metered, under the workspace's LM."""
        inputs = self.inputs_for(agent, inputs)
        with track_usage() as meter, self.lm_context():
            prediction = agent(**inputs)
        return answer_of(agent.user_id, number, agent, prediction, meter)

    async def arespond(self, user_id: str, inputs: Mapping[str, Any] | str, *, version: VersionRef = None) -> Answer:
        """`respond` for an event loop: a cached program answers without blocking; an uncached one is loaded in
        a worker thread (DuckDB read + agent build)."""
        import asyncio

        found = self.cached_program(user_id, version)
        agent, number = found if found is not None else await asyncio.to_thread(self.program, user_id, version)
        inputs = self.inputs_for(agent, inputs)
        with track_usage() as meter, self.lm_context():
            prediction = await agent.acall(**inputs)
        return answer_of(user_id, number, agent, prediction, meter)

    # -- lifecycle ------------------------------------------------------------------------------------

    def require_user(self, user_id: str) -> str:
        user_id = validate_user_id(user_id)
        if self.store.count(user_id) == 0 and not self.registry.history(user_id):
            raise UnknownUserError(user_id)
        return user_id

    def deferred_tracking(self, processes: int = 1) -> contextlib.AbstractContextManager[dict]:
        """Inside the block, commits hand their MLflow work to `processes` other processes (see
        `persona_agent.deferred_tracking`); at its end every job is waited for and its run id recorded. Yields
        (user, version) -> `Tracked`."""
        return self.deferred.session(processes)

    def close(self) -> None:
        """Finish deferred tracking, and close the store if this workspace opened it."""
        self.deferred.close()
        self.programs.clear()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
