"""A persona version's lifecycle, owned by `Workspace` (this is its mixin): commit, promote, roll back, track,
reconcile, and forget.

Every change of a user's versions goes through one method, `commit_version`, under the workspace's commit lock:
write the registry row (or take an existing version), log its MLflow run and record the run id (and a version
of the user's prompt in MLflow's prompt registry), then make it live and move the registered model's `champion`
alias and the prompt's `live` alias. A compile, a rollback, a promote and the crash
reconciliation differ only in what they ask of it. DuckDB is the source of truth: an MLflow failure is reported
with the version standing, except for a compile's run (`RunDetails.strict`), which raises.

Forget-vs-compile is one mechanism, here: `forget` holds the same commit lock and moves the user's forget epoch,
and `commit_version` refuses a compile's result (`CompileCancelledError`) if the epoch moved since it started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from persona_agent.core.config import Settings
from persona_agent.core.errors import PersonaAgentError, StoreError, TrackingError
from persona_agent.deferred_tracking import DeferredTracking
from persona_agent.program_cache import ProgramCache
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.saved import program_document
from persona_agent.reconciling import Reconciliation, reconcile
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.personas import LiveState, PersonaRecord, PersonaRegistry, VersionRef
from persona_agent.stores.records import ForgetReport
from persona_agent.stores.tokens import TokenRevocations
from persona_agent.stores.validation import validate_user_id
from persona_agent.tracking.offload import TrackJob, add_prompt, log_run

logger = logging.getLogger(__name__)


class CompileCancelledError(PersonaAgentError):
    """The user was forgotten while their compile ran: its result was discarded."""


class Forgettable(Protocol):
    """Anything holding per-user state outside DuckDB and MLflow (caches, job tables): `forget` drops it."""

    def forget(self, user_id: str) -> int: ...


class PersonaChange(BaseModel):
    """The result of a promote or rollback: the live pointer, the version it points at, and its MLflow side."""

    model_config = ConfigDict(frozen=True)

    live: LiveState
    record: PersonaRecord
    model_version: str | None = None
    tracking_error: str | None = None


@dataclass(frozen=True)
class Draft:
    """A new version to add to the registry (a compile's result): its text and the agent saved with it."""

    text: str
    agent: PersonaAgent
    parent: int
    source: str = "aligned"
    strategy: str | None = None
    scores: Mapping[str, Any] = field(default_factory=dict)
    usage: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunDetails:
    """How a version's MLflow run is logged. `strict`: an MLflow error raises (a compile); otherwise it is reported
    and the version stands. `changed`: the version is new (its run id is recorded). `shown`: record fields the
    run reports instead of the registry's (a compile that kept its base reports its own scores)."""

    params: Mapping[str, Any]
    register_model: bool = False
    trace: Mapping[str, Any] | None = None
    changed: bool = True
    strict: bool = False
    shown: Mapping[str, Any] = field(default_factory=dict)


class Committed(BaseModel):
    """What `commit_version` did: the version, the live pointer if it moved, the run, the champion alias."""

    model_config = ConfigDict(frozen=True)

    record: PersonaRecord
    live: LiveState | None = None
    run_id: str | None = None
    model_version: str | None = None
    tracking_error: str | None = None


Write = Callable[[], tuple[PersonaRecord, LiveState | None]]


class VersionLifecycle:
    """`Workspace`'s version lifecycle (a mixin: it uses the workspace's store, registry, caches and tracker)."""

    settings: Settings
    store: MemoryStore
    registry: PersonaRegistry
    programs: ProgramCache
    revocations: TokenRevocations
    opened_at: datetime
    tracker: Any
    tracking_started: Callable[[], bool]

    def _init_lifecycle(self) -> None:
        self.reconciliation: Reconciliation | None = None  # the last `reconcile`'s result
        self._forgettables: dict[str, Forgettable] = {"cached_programs": self.programs}
        self._epochs: dict[str, int] = {}
        self._epochs_lock = threading.Lock()
        self.commit_lock = threading.RLock()  # held while a version is committed and while a user is forgotten
        self.deferred = DeferredTracking(self)  # a fan-out's MLflow work in other processes (`deferred_tracking`)

    # -- the one commit -------------------------------------------------------------------------------

    def commit_version(
        self,
        user_id: str,
        version: Draft | PersonaRecord | Write,
        *,
        previous: int | None = None,
        run: RunDetails | None = None,
        promote: bool = False,
        expected_revision: int | None = None,
        register_model: bool | None = None,
        epoch: int | None = None,
    ) -> Committed:
        """Commit a version under the commit lock: write it (a `Draft` is added to the registry, a record is taken
        as it is, a callable writes and may move the live pointer), log its run (`run`, diffed against
        `previous`), make it live (`promote`, with the optimistic `expected_revision`), and move the `champion`
        alias when the live pointer moved (`register_model`, default: the setting). With `epoch`, refuse
        (`CompileCancelledError`) if the user was forgotten since that epoch was read."""
        with self.commit_lock:
            if epoch is not None and self.forget_epoch(user_id) != epoch:
                raise CompileCancelledError(
                    f"user {user_id!r} was forgotten during the compile: its result was discarded"
                )
            deferred = run is not None and self.deferred.active
            jobs: list[TrackJob] = []  # a deferred commit's MLflow work, in the order its tracking process takes it
            base = None if run is None or previous is None else self._untracked_base(user_id, previous)
            if base is not None:
                if deferred:
                    jobs.append(self._track_job(base, None, self.action_run("init")))
                else:
                    self._log_run(base, None, self.action_run("init"))  # a failure here is only logged
            record, live = self._write(user_id, version)
            if live is not None:
                self.programs.invalidate(user_id)
            logged = run is None or deferred
            run_id, error = (record.mlflow_run_id, None) if logged else self._log_run(record, previous, run)
            if promote:
                live = self.registry.promote(user_id, record.version, expected_revision=expected_revision)
                self.programs.invalidate(user_id)
            record = self.registry.get(user_id, record.version)
            model_version = None
            if deferred:
                assert run is not None
                champion = live is not None and (
                    self.settings.mlflow_register_models if register_model is None else register_model
                )
                now = self.registry.live(user_id)  # the `live` alias's target, whether or not this commit moved it
                current = None if now is None else self.registry.get(user_id, now.version)
                jobs.append(self._track_job(record, previous, run, live=current, champion=champion))
                self.deferred.submit(jobs)
                return Committed(record=record, live=live)
            if live is not None and error is None:
                model_version, error = self._champion(record, register_model)
            error = self._live_prompt(user_id) or error
        return Committed(record=record, live=live, run_id=run_id, model_version=model_version, tracking_error=error)

    def _write(self, user_id: str, version: Draft | PersonaRecord | Write) -> tuple[PersonaRecord, LiveState | None]:
        if isinstance(version, PersonaRecord):
            return version, None
        if not isinstance(version, Draft):
            return version()
        scores, usage = dict(version.scores), dict(version.usage)
        record = self.registry.add(
            user_id,
            version.text,
            source=version.source,
            parent=version.parent,
            strategy=version.strategy,
            scores=scores,
            usage=usage,
            program=program_document(version.agent, scores=scores, usage=usage),
        )
        return record, None

    def _log_run(self, record: PersonaRecord, previous: int | None, run: RunDetails) -> tuple[str | None, str | None]:
        """Log the version's run and record its run id; (run id, None), or (None, error text) when MLflow failed
        and the run is not `strict`. The run is the one a tracking process logs (`log_run` of the same job)."""
        try:
            job = self._track_job(record, previous, run)
            run_id = log_run(self.tracker, job)
        except PersonaAgentError as exc:
            if run.strict:
                raise
            logger.warning("MLflow did not record %s@v%s: %s", record.user_id, record.version, exc)
            return None, str(exc)
        if run.changed:
            self.registry.set_run_id(record.user_id, record.version, run_id)
            self._add_prompt(record.model_copy(update={"mlflow_run_id": run_id}), run.trace)
        return run_id, None

    def _add_prompt(self, record: PersonaRecord, trace: Mapping[str, Any] | None) -> None:
        """Register the version in MLflow's prompt registry; a failure is only logged (`_live_prompt` registers
        the live version again, and reports)."""
        if self.settings.mlflow_prompt_versions <= 0:
            return
        try:
            add_prompt(self.tracker, record, trace)
        except PersonaAgentError as exc:
            logger.warning("MLflow did not register the prompt of %s@v%s: %s", record.user_id, record.version, exc)

    def _live_prompt(self, user_id: str) -> str | None:
        """Point the prompt's `live` alias at the live version (registering it, with a run, if it has neither);
        the error text when MLflow failed. Nothing while MLflow holds nothing of ours (no alias to follow)."""
        live = self.registry.live(user_id)
        if self.settings.mlflow_prompt_versions <= 0 or live is None or not self.tracking_started():
            return None
        record = self.registry.get(user_id, live.version)
        if record.mlflow_run_id is None:
            _, error = self._log_run(record, None, self.action_run("register"))
            if error is not None:
                return error
            record = self.registry.get(user_id, live.version)
        try:
            self.tracker.prompts.set_live(record)
        except PersonaAgentError as exc:
            logger.warning("MLflow did not move the live prompt of %s: %s", user_id, exc)
            return str(exc)
        return None

    def _untracked_base(self, user_id: str, previous: int) -> PersonaRecord | None:
        """The version a change starts from when it still needs a run of its own: the initial version (v0) is
        made without a run (on a first answer, where MLflow has no place), so its first compile or rollback logs
        it, and every version in `personas list` and MLflow has a run."""
        base = self.registry.get(user_id, previous)
        return base if base.mlflow_run_id is None and base.source == "init" else None

    def _track_job(
        self,
        record: PersonaRecord,
        previous: int | None,
        run: RunDetails,
        *,
        live: PersonaRecord | None = None,
        champion: bool = False,
    ) -> TrackJob:
        """The version's MLflow work as plain data read from the registry (the run reports `run.shown` over the
        record and its diff against `previous`). One builder for both paths, so a deferred run is the inline one:
        `_log_run` logs it here, a deferred commit hands it to a tracking process (`persona_agent.tracking.offload`,
        which cannot read DuckDB); `live` and `champion` only matter there."""
        user = record.user_id
        return TrackJob(
            settings=self.settings,
            record=record.model_copy(update=dict(run.shown)) if run.shown else record,
            document=self.registry.program(user, record.version),
            diff="" if previous is None else self.registry.diff(user, previous, record.version),
            trace=None if run.trace is None else dict(run.trace),
            params=dict(run.params),
            register_model=run.register_model,
            changed=run.changed,
            live=live,
            champion=champion,
        )

    def action_run(self, action: str) -> RunDetails:
        """The run of a version made outside a compile (a rollback, a registration, a reconciliation)."""
        return RunDetails(params={"action": action}, register_model=self.settings.mlflow_register_models)

    def _champion(self, record: PersonaRecord, register: bool | None = None) -> tuple[str | None, str | None]:
        """Move `persona-<user>@champion` to this version when registering is on; (model version, error)."""
        if not (self.settings.mlflow_register_models if register is None else register):
            return None, None
        if record.mlflow_run_id is None:
            _, error = self._log_run(record, None, self.action_run("register"))
            if error is not None:
                return None, error
            record = self.registry.get(record.user_id, record.version)
        try:
            return self.tracker.set_champion(record, self.registry.program(record.user_id, record.version)), None
        except PersonaAgentError as exc:
            logger.warning("MLflow did not register %s@v%s: %s", record.user_id, record.version, exc)
            return None, str(exc)

    # -- what callers ask of it -----------------------------------------------------------------------

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

        def write() -> tuple[PersonaRecord, LiveState]:
            state = self.registry.promote(user_id, version, expected_revision=expected_revision)
            return self.registry.get(user_id, state.version), state

        done = self.commit_version(user_id, write, register_model=register_model)
        return _change(done)

    def rollback(self, user_id: str, to: VersionRef = None, *, expected_revision: int | None = None) -> PersonaChange:
        """Restore an earlier version as a new live version (see `PersonaRegistry.rollback`), tracked in MLflow."""
        previous = self.registry.live(user_id)
        done = self.commit_version(
            user_id,
            lambda: self.registry.rollback(user_id, to, expected_revision=expected_revision),
            previous=previous.version if previous else None,
            run=self.action_run("rollback"),
        )
        return _change(done)

    def reconcile(self) -> Reconciliation:
        """Mark dead processes' RUNNING runs FAILED and track versions left without a run: see
        `persona_agent.reconciling`. The result is also kept in `reconciliation`."""
        if self.store.read_only:
            raise StoreError("A read-only workspace cannot reconcile: its writer may be alive.")
        tracker = self.tracker  # first: opening MLflow may itself reconcile

        def track(record: PersonaRecord) -> str | None:
            run = self.action_run("reconcile")
            return self.commit_version(record.user_id, record, previous=record.parent, run=run).tracking_error

        self.reconciliation = reconcile(tracker, self.registry.untracked(before=self.opened_at), track)
        return self.reconciliation

    # -- forgetting -----------------------------------------------------------------------------------

    def add_forgettable(self, name: str, holder: Forgettable) -> None:
        """Register per-user state held elsewhere (a service's job table), so `forget` clears it too."""
        self._forgettables[name] = holder

    def forgettables(self) -> Iterator[tuple[str, Forgettable]]:
        return iter(list(self._forgettables.items()))

    def forget_epoch(self, user_id: str) -> int:
        """Bumped by every forget of the user: a compile that started before must not write its result."""
        with self._epochs_lock:
            return self._epochs.get(user_id, 0)

    def forget(self, user_id: str) -> ForgetReport:
        """Remove every trace of `user_id` and return what was removed, per place. Idempotent; the order and what
        is not covered: see `persona_agent.forgetting`.

        Raises `TrackingError` if MLflow could not be cleaned (everything else is already gone; run it again)."""
        user_id = validate_user_id(user_id)
        with self.commit_lock:
            self.deferred.drain(wait=True)  # a pending run would otherwise land in MLflow after the erasure
            with self._epochs_lock:
                self._epochs[user_id] = self._epochs.get(user_id, 0) + 1
            self.revocations.revoke(user_id)  # first: no token issued until now can write the user back
            run_ids = [r.mlflow_run_id for r in self.registry.history(user_id) if r.mlflow_run_id]
            memory = self.store.forget(user_id)  # rows, vectors (and their FAISS partition), profiles
            personas = self.registry.forget(user_id)
            erased_by = self.store.schedule_compaction()  # the registry's rows share the store's file
            extra: dict[str, int] = {
                "personas": personas["personas"],
                "persona_live": personas["live"],
                "persona_events": personas["events"],
            }
            for name, holder in self.forgettables():
                extra[name] = int(holder.forget(user_id))
            if self.tracking_started():
                extra.update(self._forget_runs(user_id, run_ids))
        return memory.model_copy(update={"extra": {**memory.extra, **extra}, "erased_by": erased_by})

    def _forget_runs(self, user_id: str, run_ids: list[str]) -> dict[str, int]:
        try:
            return self.tracker.forget(user_id, run_ids)
        except TrackingError:
            raise
        except Exception as exc:  # MLflow's own errors: say what is left and how to finish
            raise TrackingError(
                f"forgot {user_id!r} in DuckDB and caches, but MLflow failed ({exc}); run forget again"
            ) from exc


def _change(done: Committed) -> PersonaChange:
    assert done.live is not None  # a promote and a rollback always move the live pointer
    return PersonaChange(
        live=done.live, record=done.record, model_version=done.model_version, tracking_error=done.tracking_error
    )
