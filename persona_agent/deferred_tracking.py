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
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

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
        self.owner = owner  # the workspace: its registry and commit_lock
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

    def submit(self, jobs: Iterable[TrackJob]) -> None:
        """Queue a commit's jobs (built by `VersionLifecycle._track_job`, the base's run first when it has none);
        a user's jobs run in order in one process."""
        assert self._pool is not None
        for job in jobs:
            future = self._pool.submit(job)
            self._pending.append(_Pending(job.record.user_id, job.record.version, job.changed, future))
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
