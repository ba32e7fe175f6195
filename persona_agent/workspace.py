"""`Workspace`: the one object a process holds to answer, compile and manage personas.

It owns the memory store (DuckDB: one writer process per file), the persona registry in the same file, MLflow
tracking (opened on first use), the LM (made from settings on first use, or given), a factory that builds
agents fast from saved programs, and an LRU of ready programs keyed by (user, version). The CLI and the HTTP
service both work through it, so promote, rollback and forget behave the same from either.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import dspy
from pydantic import BaseModel, ConfigDict

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, PersonaAgentError, TrackingError, UnknownUserError
from persona_agent.core.usage import track_usage
from persona_agent.program_cache import ProgramCache
from persona_agent.programs.persona import Persona, init_persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.saved import (
    KNOWN_SIGNATURES,
    ProgramFactory,
    ProgramSpec,
    program_document,
    read_document,
)
from persona_agent.reconciling import Reconciliation
from persona_agent.stores.embeddings import Embedder
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.personas import LIVE_ALIASES, LiveState, PersonaRecord, PersonaRegistry, VersionRef
from persona_agent.stores.records import ForgetReport
from persona_agent.stores.tokens import TokenRevocations
from persona_agent.stores.validation import validate_user_id

logger = logging.getLogger(__name__)


class Forgettable(Protocol):
    """Anything holding per-user state outside DuckDB and MLflow (caches, job tables): `forget` drops it."""

    def forget(self, user_id: str) -> int: ...


class Answer(BaseModel):
    """One answer of a user's live (or given) persona program."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    persona_version: int
    outputs: dict[str, Any]
    trajectory: list[dict[str, Any]]
    usage: dict[str, Any]

    @property
    def text(self) -> str:
        """The first output field, as text (the answer of a request -> response task)."""
        return str(next(iter(self.outputs.values()), ""))


class PersonaChange(BaseModel):
    """The result of a promote or rollback: the live pointer, the version it points at, and its MLflow side."""

    model_config = ConfigDict(frozen=True)

    live: LiveState
    record: PersonaRecord
    model_version: str | None = None
    tracking_error: str | None = None


def persona_of(record: PersonaRecord) -> Persona:
    return Persona.from_dict(record.persona_dict())


def is_external_ref(version: object) -> bool:
    """A version given as an MLflow reference (run id, runs:/ or models:/ URI) or a saved JSON file."""
    from persona_agent.tracking.tracker import is_run_id

    if isinstance(version, Path):
        return True
    if not isinstance(version, str):
        return False
    return version.startswith(("runs:/", "models:/")) or is_run_id(version) or version.endswith(".json")


class Workspace:
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
        self.reconciliation: Reconciliation | None = None  # the last `reconcile`'s result
        self._forgettables: dict[str, Forgettable] = {"cached_programs": self.programs}
        self._epochs: dict[str, int] = {}
        self.commit_lock = threading.RLock()  # held while a compile commits and while a user is forgotten
        self._lock = threading.Lock()

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
        """The adapter for the LM (`adapter_for`), with system messages memoised per signature class."""
        if self._adapter is None:
            from persona_agent.lm.adapter_cache import with_system_message_cache
            from persona_agent.lm.models import adapter_for

            self._adapter = with_system_message_cache(adapter_for(self.lm))
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

    def reconcile(self) -> Reconciliation:
        """Mark dead processes' RUNNING runs FAILED and track versions left without a run: see
        `persona_agent.reconciling`. The result is also kept in `reconciliation`."""
        from persona_agent.reconciling import reconcile

        self.reconciliation = reconcile(self)
        return self.reconciliation

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
        record = self.registry.get(user_id, number)
        document = self.registry.program(user_id, number)
        persona = persona_of(record)
        if document is None:
            agent = self.factory.for_user(self.spec, user_id, persona)
        else:
            agent = self.factory.build(document, user_id=user_id, persona=persona)
        return self.programs.put(user_id, number, agent), number

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
        no MLflow), or one built from an MLflow run id / `runs:/` / `models:/` URI or a saved JSON file."""
        user_id = validate_user_id(user_id)
        if not is_external_ref(version):
            return self.program(user_id, version)[0].deepcopy()
        if isinstance(version, Path) or str(version).endswith(".json"):
            document = read_document(version)
        else:
            document = self.tracker.load_document(str(version))
        owner = (document.get("persona") or {}).get("user_id") or document.get("user_id")
        if owner is not None and owner != user_id:
            raise InvalidInputError("user_id", user_id, f"the program at {version} belongs to {owner!r}")
        return self.factory.build(document, user_id=user_id, signature=signature)

    def _track_version(self, record: PersonaRecord, *, previous: int | None, action: str) -> str | None:
        """Log a run for a version made outside a compile (a rollback, or a registration of an untracked
        version); returns the error text if MLflow failed (the version stands: DuckDB is the source of truth)."""
        try:
            diff = "" if previous is None else self.registry.diff(record.user_id, previous, record.version)
            run_id = self.tracker.log_version(
                record,
                document=self.registry.program(record.user_id, record.version),
                diff=diff,
                params={"action": action},
                register_model=self.settings.mlflow_register_models,
            )
        except PersonaAgentError as exc:
            logger.warning("MLflow did not record %s@v%s: %s", record.user_id, record.version, exc)
            return str(exc)
        self.registry.set_run_id(record.user_id, record.version, run_id)
        return None

    def _champion(self, record: PersonaRecord, register: bool | None = None) -> tuple[str | None, str | None]:
        """Move `persona-<user>@champion` to this version when registering is on; (model version, error)."""
        if not (self.settings.mlflow_register_models if register is None else register):
            return None, None
        if record.mlflow_run_id is None:
            error = self._track_version(record, previous=None, action="register")
            if error is not None:
                return None, error
            record = self.registry.get(record.user_id, record.version)
        try:
            return self.tracker.set_champion(record, self.registry.program(record.user_id, record.version)), None
        except PersonaAgentError as exc:
            logger.warning("MLflow did not register %s@v%s: %s", record.user_id, record.version, exc)
            return None, str(exc)

    def promote(
        self,
        user_id: str,
        version: VersionRef,
        *,
        expected_revision: int | None = None,
        register_model: bool | None = None,
    ) -> PersonaChange:
        """Make a version live (optimistic lock with `expected_revision`); drops the user's cached programs.
        With `register_model` (default: the `mlflow_register_models` setting), the registered model's `champion`
        alias follows; MLflow errors are reported in the result and never undo the promote (DuckDB is the
        source of truth)."""
        state = self.registry.promote(user_id, version, expected_revision=expected_revision)
        self.programs.invalidate(user_id)
        record = self.registry.get(user_id, state.version)
        model_version, error = self._champion(record, register_model)
        return PersonaChange(live=state, record=record, model_version=model_version, tracking_error=error)

    def rollback(self, user_id: str, to: VersionRef = None, *, expected_revision: int | None = None) -> PersonaChange:
        """Restore an earlier version as a new live version (see `PersonaRegistry.rollback`), tracked in MLflow."""
        previous = self.registry.live(user_id)
        record, state = self.registry.rollback(user_id, to, expected_revision=expected_revision)
        self.programs.invalidate(user_id)
        error = self._track_version(record, previous=previous.version if previous else None, action="rollback")
        record = self.registry.get(user_id, record.version)
        model_version, champion_error = (None, None) if error else self._champion(record)
        return PersonaChange(
            live=state, record=record, model_version=model_version, tracking_error=error or champion_error
        )

    # -- answering ------------------------------------------------------------------------------------

    @staticmethod
    def inputs_for(agent: PersonaAgent, inputs: Mapping[str, Any] | str) -> dict[str, Any]:
        """The task inputs of a request: a text goes to the task's first input field."""
        fields = list(agent.task_signature.input_fields)
        if isinstance(inputs, str):
            return {fields[0]: inputs}
        if not isinstance(inputs, Mapping) or set(inputs) != set(fields):
            shown = sorted(inputs) if isinstance(inputs, Mapping) else inputs
            raise InvalidInputError("inputs", shown, f"this user's task takes exactly the fields {fields}")
        return dict(inputs)

    @staticmethod
    def _answer(user_id: str, version: int, agent: PersonaAgent, prediction: dspy.Prediction, usage) -> Answer:
        return Answer(
            user_id=user_id,
            persona_version=version,
            outputs={k: prediction[k] for k in agent.task_signature.output_fields},
            trajectory=list(prediction.get("trajectory", [])),
            usage=usage.report().as_dict(),
        )

    def respond(self, user_id: str, inputs: Mapping[str, Any] | str, *, version: VersionRef = None) -> Answer:
        """Answer with the user's live persona (or `version`)."""
        agent, number = self.program(user_id, version)
        inputs = self.inputs_for(agent, inputs)
        with track_usage() as meter, self.lm_context():
            prediction = agent(**inputs)
        return self._answer(user_id, number, agent, prediction, meter)

    async def arespond(self, user_id: str, inputs: Mapping[str, Any] | str, *, version: VersionRef = None) -> Answer:
        """`respond` for an event loop: a cached program answers without blocking; an uncached one is loaded in
        a worker thread (DuckDB read + agent build)."""
        import asyncio

        found = self.cached_program(user_id, version)
        agent, number = found if found is not None else await asyncio.to_thread(self.program, user_id, version)
        inputs = self.inputs_for(agent, inputs)
        with track_usage() as meter, self.lm_context():
            prediction = await agent.acall(**inputs)
        return self._answer(user_id, number, agent, prediction, meter)

    # -- forgetting -----------------------------------------------------------------------------------

    def add_forgettable(self, name: str, holder: Forgettable) -> None:
        """Register per-user state held elsewhere (a service's job table), so `forget` clears it too."""
        self._forgettables[name] = holder

    def forget_epoch(self, user_id: str) -> int:
        """Bumped by every forget of the user: a compile that started before must not write its result."""
        with self._lock:
            return self._epochs.get(user_id, 0)

    def forget(self, user_id: str) -> ForgetReport:
        """Forget a user everywhere: see `persona_agent.forgetting.forget_user`."""
        from persona_agent.forgetting import forget_user

        return forget_user(self, user_id)

    def _bump_epoch(self, user_id: str) -> None:
        with self._lock:
            self._epochs[user_id] = self._epochs.get(user_id, 0) + 1

    def forgettables(self) -> Iterator[tuple[str, Forgettable]]:
        return iter(list(self._forgettables.items()))

    # -- lifecycle ------------------------------------------------------------------------------------

    def require_user(self, user_id: str) -> str:
        user_id = validate_user_id(user_id)
        if self.store.count(user_id) == 0 and not self.registry.history(user_id):
            raise UnknownUserError(user_id)
        return user_id

    def close(self) -> None:
        """Close the store if this workspace opened it."""
        self.programs.clear()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
