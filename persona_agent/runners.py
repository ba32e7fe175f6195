"""Job runners: fan work out to a thread pool (`local`) or a Ray cluster (`ray`), collect results in the driver.

Workers only compute; the caller's `on_result` runs in the driver thread as each result arrives, so everything
that writes (DuckDB has one writer, MLflow runs are logged once) stays in one place. A job that raises, or
whose worker dies (a Ray worker process killed, `ray.exceptions.WorkerCrashedError`), is retried up to
`retries` times, then reported with its error; the other jobs go on.

`local` suits LM calls that wait on the network (a hosted or served model): the GIL is released while a thread
waits, and each job is submitted with a copy of the caller's `contextvars` context, so DSPy settings set with
`dspy.context` in the driver hold in the worker. `ray` (the `ray` extra) runs each job as a Ray task in its own
process, locally (`ray.init()`) or on a cluster (`address`); its function and arguments must pickle. Tasks that use
the local model share one model host actor per node (`persona_agent.lm.hosted`); `RayRunner.close` ends them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextvars import copy_context
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from persona_agent.core.errors import InvalidInputError
from persona_agent.lm.hosted import import_ray, stop_hosts

RunnerName = Literal["local", "ray"]
__all__ = [
    "InlineRunner",
    "Job",
    "JobOutcome",
    "LocalRunner",
    "RayRunner",
    "Runner",
    "RunnerName",
    "make_runner",
    "run_jobs",
]


@dataclass
class Job:
    """One unit of work: `fn(*args)` in a worker, known to the driver by `key`."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    attempts: int = 0


@dataclass
class JobOutcome:
    """A finished job: its value, or the error of its last attempt (`error` is then set)."""

    key: str
    value: Any = None
    error: str | None = None
    attempts: int = 1
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


class Runner(Protocol):
    """Where jobs run. `submit` returns a handle; `wait` returns the finished handles with (value, error)."""

    name: str
    workers: int

    def submit(self, job: Job) -> Any: ...

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any, BaseException | None]]: ...

    def close(self) -> None: ...


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class LocalRunner:
    """A thread pool; each job runs in a copy of the submitting thread's context (DSPy settings included)."""

    name = "local"

    def __init__(self, workers: int = 4) -> None:
        if workers < 1:
            raise InvalidInputError("workers", workers, "must be at least 1")
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="persona-job")

    def submit(self, job: Job) -> Future:
        return self._pool.submit(copy_context().run, job.fn, *job.args)

    def wait(self, handles: list[Future]) -> list[tuple[Future, Any, BaseException | None]]:
        done, _ = wait_futures(handles, return_when=FIRST_COMPLETED)
        out = []
        for future in done:
            error = future.exception()
            out.append((future, None if error is not None else future.result(), error))
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class InlineRunner:
    """Runs each job in the calling thread as it is submitted: one at a time, with `run_jobs`' retries (the
    service's compile jobs, each already on a thread of its own)."""

    name = "local"
    workers = 1

    def submit(self, job: Job) -> Future:
        future: Future = Future()
        try:
            future.set_result(job.fn(*job.args))
        except Exception as exc:  # reported by `wait`, then retried or returned as the job's error
            future.set_exception(exc)
        return future

    def wait(self, handles: list[Future]) -> list[tuple[Future, Any, BaseException | None]]:
        return [(f, None if f.exception() else f.result(), f.exception()) for f in handles]

    def close(self) -> None:
        """Nothing to release."""


class RayRunner:
    """Ray tasks, one per job (Ray's own task retries are off: `run_jobs` retries, and counts attempts).

    Args:
        workers: jobs in flight at once (Ray schedules them on the cluster's CPUs).
        address: a cluster to join (`ray://host:10001` or `auto`); None starts a local Ray.
        num_cpus: CPUs of a local Ray (ignored when joining a cluster).
        cpus_per_job: CPUs each task reserves (LM calls wait on the network: a fraction packs more per core).
    """

    name = "ray"

    def __init__(
        self, workers: int = 4, *, address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1.0
    ) -> None:
        if workers < 1:
            raise InvalidInputError("workers", workers, "must be at least 1")
        self.ray = import_ray()
        self.workers = workers
        self.cpus_per_job = cpus_per_job
        self._started = not self.ray.is_initialized()
        if self._started:
            self.ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False)
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, job: Job) -> Any:
        remote = self._remote.get(job.fn)
        if remote is None:
            remote = self._remote[job.fn] = self.ray.remote(job.fn).options(max_retries=0, num_cpus=self.cpus_per_job)
        return remote.remote(*job.args)

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any, BaseException | None]]:
        done, _ = self.ray.wait(handles, num_returns=1)
        out = []
        for ref in done:
            try:
                out.append((ref, self.ray.get(ref), None))
            except Exception as exc:  # a task error or a lost worker: the job is retried or reported
                out.append((ref, None, exc))
        return out

    def close(self) -> None:
        """End the model host actors of this job's namespace (detached: they would hold a model on a joined
        cluster after the job) and shut down a Ray this runner started (a joined cluster is left running)."""
        if self.ray.is_initialized():
            stop_hosts()
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()


def make_runner(
    name: str, workers: int, *, address: str | None = None, num_cpus: int | None = None, cpus_per_job: float = 1.0
) -> Runner:
    """A runner by name (`local` or `ray`); a bad name or worker count is `InvalidInputError`."""
    if name == "local":
        return LocalRunner(workers)
    if name == "ray":
        return RayRunner(workers, address=address, num_cpus=num_cpus, cpus_per_job=cpus_per_job)
    raise InvalidInputError("runner", name, "must be 'local' or 'ray'")


def run_jobs(
    runner: Runner,
    jobs: Iterable[Job],
    *,
    retries: int = 2,
    more: Callable[[], bool] = lambda: True,
    in_flight: int | None = None,
    overlap: bool = True,
) -> Iterator[JobOutcome]:
    """Run jobs with at most `in_flight` (default: the runner's workers) at once and yield each outcome in the
    driver as it finishes. A failed attempt is resubmitted up to `retries` times. New jobs are taken from
    `jobs` lazily, only while `more()` says so (a budget), so a long selection is never held in memory whole;
    with `overlap`, free workers get new jobs before the driver handles the finished ones."""
    limit = in_flight or runner.workers
    source = iter(jobs)
    pending: dict[Any, Job] = {}
    errors: dict[str, list[str]] = {}
    while True:
        _refill(runner, source, pending, limit, more)
        if not pending:
            return
        finished: list[JobOutcome] = []
        for handle, value, error in runner.wait(list(pending)):
            job = pending.pop(handle)
            if error is None:
                finished.append(JobOutcome(job.key, value, None, job.attempts, errors.pop(job.key, [])))
                continue
            errors.setdefault(job.key, []).append(_describe(error))
            if job.attempts <= retries:
                job.attempts += 1
                pending[runner.submit(job)] = job
            else:
                finished.append(JobOutcome(job.key, None, _describe(error), job.attempts, errors.pop(job.key)))
        if overlap:  # workers go on while the driver handles the outcomes (off: `more` sees them first)
            _refill(runner, source, pending, limit, more)
        yield from finished


def _refill(
    runner: Runner, source: Iterator[Job], pending: dict[Any, Job], limit: int, more: Callable[[], bool]
) -> None:
    while len(pending) < limit and more():
        job = next(source, None)
        if job is None:
            return
        job.attempts += 1
        pending[runner.submit(job)] = job
