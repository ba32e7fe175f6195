"""A fan-out's MLflow work in other processes: `VersionLifecycle.commit_version` submits, the driver records.

While `active` (inside `Workspace.deferred_tracking`), a commit writes and promotes the version in DuckDB as always
and hands its MLflow work to a `TrackingPool` (`persona_agent.tracking.offload`) instead of doing it inline: the
run of the version the change starts from when it has none (version 0), then the version's own run, prompt version,
`live` alias and champion alias. `drain` records the returned run ids in the registry, in the driver's thread under
the commit lock (DuckDB keeps one writer). Until then a version has no run id; a process that dies first leaves
it so, and the next writable open's reconcile logs it. A forget drains first, so no run of a forgotten user lands
in MLflow after its erasure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from persona_agent.stores.personas import PersonaRecord
from persona_agent.tracking.offload import Tracked, TrackingPool, TrackJob

__all__ = ["DeferredTracking"]


@dataclass(frozen=True)
class _Pending:
    user_id: str
    version: int
    changed: bool
    future: Future[Tracked]


class DeferredTracking:
    """The pool (made on first use, kept until `close`), the submitted jobs and what they returned."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner  # the workspace: settings, registry, commit_lock
        self.active = False
        self._pool: TrackingPool | None = None
        self._processes = 0
        self._pending: list[_Pending] = []
        self.tracked: dict[tuple[str, int], Tracked] = {}

    @contextlib.contextmanager
    def session(self, processes: int) -> Iterator[dict[tuple[str, int], Tracked]]:
        """Defer tracking to `processes` processes inside the block; at its end wait for every job and record it.
        Yields the map (user, version) -> `Tracked`, filled when the block ends."""
        if self._pool is None or self._processes != processes:
            self.close()
            self._pool, self._processes = TrackingPool(processes), processes
        self.active, self.tracked = True, {}
        try:
            yield self.tracked
        finally:
            self.active = False
            self.drain(wait=True)

    def base_job(self, user_id: str, previous: int) -> TrackJob | None:
        """Version 0's own run, when a change starts from it untracked (as `_track_untracked_base` does inline)."""
        base = self.owner.registry.get(user_id, previous)
        if base.mlflow_run_id is not None or base.source != "init":
            return None
        register = self.owner.settings.mlflow_register_models
        return self._job(base, None, {"action": "init"}, None, register, True, with_live=False)

    def submit(
        self, base_job: TrackJob | None, record: PersonaRecord, previous: int | None, run: Any, champion: bool
    ) -> None:
        """Queue the base's run (if any), then this version's; a user's jobs run in order in one process."""
        assert self._pool is not None
        shown = record.model_copy(update=dict(run.shown)) if run.shown else record
        job = self._job(shown, previous, dict(run.params), run.trace, run.register_model, run.changed, champion)
        for item in (base_job, job):
            if item is not None:
                future = self._pool.submit(item)
                self._pending.append(_Pending(item.record.user_id, item.record.version, item.changed, future))
        self.drain(wait=False)

    def drain(self, *, wait: bool) -> None:
        """Record the finished jobs' run ids (a version's, only when it is new); with `wait`, every job's."""
        with self.owner.commit_lock:
            done = [p for p in self._pending if wait or p.future.done()]
            for pending in done:
                self._pending.remove(pending)
                try:
                    result = pending.future.result()
                except Exception as exc:  # the process died: the version stays without a run (reconcile)
                    result = Tracked(pending.user_id, pending.version, pending.changed, None, error=repr(exc))
                if result.run_id is not None and result.changed:
                    self.owner.registry.set_run_id(result.user_id, result.version, result.run_id)
                self.tracked[(result.user_id, result.version)] = result

    def close(self) -> None:
        """Finish the pool's jobs, record them, end its processes."""
        self.drain(wait=True)
        if self._pool is not None:
            self._pool.close()
            self._pool, self._processes = None, 0

    def _job(
        self,
        record: PersonaRecord,
        previous: int | None,
        params: dict[str, Any],
        trace: Any,
        register_model: bool,
        changed: bool,
        champion: bool = False,
        *,
        with_live: bool = True,
    ) -> TrackJob:
        registry, user = self.owner.registry, record.user_id
        live = registry.live(user) if with_live else None
        return TrackJob(
            settings=self.owner.settings,
            record=record,
            document=registry.program(user, record.version),
            diff="" if previous is None else registry.diff(user, previous, record.version),
            trace=None if trace is None else dict(trace),
            params=params,
            register_model=register_model,
            changed=changed,
            live=None if live is None else registry.get(user, live.version),
            champion=champion,
        )
