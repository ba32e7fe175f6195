"""MLflow tracking of committed versions in worker processes, so a fan-out's driver writes only DuckDB rows.

A version's MLflow work (its run with params, metrics and artifacts, its prompt version, the `live` alias, the
champion alias) is ~100 ms of MLflow's own Python on a sqlite store. The fan-out's driver commits in the same
process as the local runner's worker threads, so under the GIL that work, not the LM, bounds a fan-out's users per
minute. `TrackingPool` runs it in separate processes: `track` gets everything it needs as plain data (`TrackJob`)
and returns the run id (`Tracked`); the driver records it in the registry. A user's jobs always go to the same
process, in submission order (version 0's run before version 1's, the alias last). Processes are spawned (a fork
of a process holding DuckDB, FAISS or llama.cpp threads is unsafe) and live as long as the pool.

`log_run` and `add_prompt` are `track`'s MLflow steps; the inline commit (`persona_agent.lifecycle`) takes the same
two, from a `TrackJob` built the same way, with its registry writes in between.
"""

from __future__ import annotations

import multiprocessing
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, PersonaAgentError
from persona_agent.stores.personas import PersonaRecord
from persona_agent.tracking.tracker import Tracker

__all__ = ["TrackJob", "Tracked", "TrackingPool", "add_prompt", "log_run", "track"]


@dataclass(frozen=True)
class TrackJob:
    """One version's MLflow work. `record` is the version as its run reports it; `changed`: a new version (its run
    id is recorded and it gets a prompt version), else a no-change run of the base; `live`: the user's live record
    after the commit, whose prompt version the `live` alias then points at (None: leave the alias); `champion`:
    also move the registered model's champion alias to this version."""

    settings: Settings
    record: PersonaRecord
    document: Mapping[str, Any] | None
    diff: str
    trace: Mapping[str, Any] | None
    params: Mapping[str, Any]
    register_model: bool
    changed: bool
    live: PersonaRecord | None
    champion: bool = False


@dataclass(frozen=True)
class Tracked:
    """What `track` did: the run id (None when MLflow refused the run), the model version, the error text."""

    user_id: str
    version: int
    changed: bool
    run_id: str | None
    model_version: str | None = None
    error: str | None = None


def log_run(tracker: Tracker, job: TrackJob) -> str:
    """The job's run (params, metrics, artifacts, `model/` with `register_model`); its run id. Raises MLflow's
    refusal (`PersonaAgentError`): the caller decides whether the version stands without a run."""
    return tracker.log_version(
        job.record,
        document=job.document,
        diff=job.diff,
        trace=job.trace,
        params=job.params,
        register_model=job.register_model,
        changed=job.changed,
    )


def add_prompt(tracker: Tracker, record: PersonaRecord, trace: Mapping[str, Any] | None) -> str:
    """A prompt version for `record` (which carries its run id), tagged with the small-LM guard's check from the
    trace so unsafe personas can be found in the prompt registry too; its number. Raises MLflow's refusal."""
    check = (trace or {}).get("persona_check")
    return tracker.prompts.add(record, check=None if check is None else str(check))


_TRACKERS: dict[str, Tracker] = {}


def track(job: TrackJob) -> Tracked:
    """Log the job's run, register its prompt version, move the aliases; in a pool process (one `Tracker` per
    settings per process). MLflow's refusals come back as `error`, never raised: the version stands without it.
    As in the inline commit, each step after the run is tried on its own: a refused prompt version does not keep
    the champion alias on an older version."""
    key = job.settings.model_dump_json()
    tracker = _TRACKERS.get(key) or _TRACKERS.setdefault(key, Tracker(job.settings))
    record, prompts = job.record, job.settings.mlflow_prompt_versions > 0
    try:
        run_id = log_run(tracker, job)
    except PersonaAgentError as exc:
        return Tracked(record.user_id, record.version, job.changed, None, error=str(exc))
    tracked = record.model_copy(update={"mlflow_run_id": run_id})
    errors: list[str] = []

    def attempt(step: Callable[[], Any]) -> Any:
        try:
            return step()
        except PersonaAgentError as exc:
            errors.append(str(exc))
            return None

    live = job.live
    if job.changed and prompts:
        attempt(lambda: add_prompt(tracker, tracked, job.trace))
    if live is not None and prompts:
        attempt(lambda: tracker.prompts.set_live(tracked if live.version == record.version and job.changed else live))
    model_version = attempt(lambda: tracker.set_champion(tracked, job.document)) if job.champion else None
    return Tracked(record.user_id, record.version, job.changed, run_id, model_version, "; ".join(errors) or None)


def _ready() -> bool:
    import mlflow  # noqa: F401  (the process's one-off import, seconds)

    return True


class TrackingPool:
    """`processes` single-process executors; a user's jobs go to one of them (by a stable hash of the user id)."""

    def __init__(self, processes: int = 1) -> None:
        if processes < 1:
            raise InvalidInputError("processes", processes, "must be at least 1")
        context = multiprocessing.get_context("spawn")
        self._executors = [ProcessPoolExecutor(1, mp_context=context) for _ in range(processes)]
        for ready in [executor.submit(_ready) for executor in self._executors]:
            ready.result()  # spawned and MLflow imported now, not inside the first commits

    def submit(self, job: TrackJob) -> Future[Tracked]:
        index = zlib.crc32(job.record.user_id.encode()) % len(self._executors)
        return self._executors[index].submit(track, job)

    def close(self) -> None:
        """Finish the submitted jobs and end the processes."""
        for executor in self._executors:
            executor.shutdown(wait=True)
