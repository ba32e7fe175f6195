"""Background compile jobs: planned (and validated) at once, run in worker threads off the event loop.

A job is planned in the request (bad input is a 422 before any job exists, and the response carries the
estimate), then runs in a small thread pool carrying the request's context (`compile_workers` at once). Its
optimizer is retried up to `compile_retries` times (`persona_agent.fanout.compile_planned`), then the result is
committed once, so a retry never makes a second version; `attempts` says how many it took. Job records are kept in memory
(the latest `keep` finished ones); `forget` drops a user's jobs, and a compile that is still running for a
forgotten user discards its result (see `persona_agent.compiling`).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from persona_agent.compiling import CompileOptions, CompilePlan, plan_compile
from persona_agent.fanout import CompileJobError, compile_planned
from persona_agent.service.limits import QuotaExceededError
from persona_agent.workspace import Workspace

JobStatus = Literal["queued", "running", "succeeded", "failed"]
PENDING = ("queued", "running")
RETRY_AFTER = 30  # seconds: a hint for a client over its pending-jobs quota (a compile takes minutes)


def _now() -> datetime:
    return datetime.now(UTC)


class Job(BaseModel):
    """The state of one compile job, as `GET /v1/jobs/{id}` returns it."""

    id: str
    user_id: str
    kind: Literal["compile"] = "compile"
    status: JobStatus = "queued"
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    options: dict[str, Any]
    estimate: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None
    attempts: int = 0


class JobManager:
    """Compile jobs of one workspace. Thread-safe; `forget(user)` is registered with the workspace."""

    def __init__(self, workspace: Workspace, *, workers: int = 1, keep: int = 1000, retries: int | None = None) -> None:
        self.workspace = workspace
        self.retries = workspace.settings.compile_retries if retries is None else retries
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="persona-compile")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()
        workspace.add_forgettable("jobs", self)

    def submit(self, user_id: str, options: CompileOptions, *, max_pending: int | None = None) -> Job:
        """Plan now (raising on bad input), run later; returns the queued job. With `max_pending`, a user who
        already has that many jobs queued or running gets `QuotaExceededError` (checked as the job is added)."""
        plan = plan_compile(self.workspace, user_id, options)
        job = Job(
            id=f"job_{uuid.uuid4().hex}",
            user_id=plan.user_id,
            created_at=_now(),
            options=options.model_dump(),
            estimate=plan.estimate,
        )
        with self._lock:
            pending = sum(1 for j in self._jobs.values() if j.user_id == job.user_id and j.status in PENDING)
            if max_pending is not None and pending >= max_pending:
                raise QuotaExceededError(f"{pending} compile jobs pending, the quota is {max_pending}", RETRY_AFTER)
            self._jobs[job.id] = job
            self._trim()
        self._pool.submit(copy_context().run, self._run, job.id, plan)
        return job.model_copy()

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:  # a forgotten user's job is gone, and stays gone
                self._jobs[job_id] = job.model_copy(update=changes)

    def _run(self, job_id: str, plan: CompilePlan) -> None:
        self._update(job_id, status="running", started_at=_now())
        try:
            result, attempts = compile_planned(self.workspace, plan, retries=self.retries)
        except CompileJobError as exc:  # every attempt failed: the last error, as `TypeName: message`
            self._update(job_id, status="failed", finished_at=_now(), error=str(exc), attempts=exc.attempts)
            return
        except Exception as exc:  # the commit failed (recorded on the job: the service stays up)
            self._update(job_id, status="failed", finished_at=_now(), error=f"{type(exc).__name__}: {exc}", attempts=1)
            return
        done = result.model_dump(mode="json")
        self._update(job_id, status="succeeded", finished_at=_now(), result=done, attempts=attempts)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy() if job is not None else None

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status not in PENDING]
        for key in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[key]

    def forget(self, user_id: str) -> int:
        """Drop the user's job records (a running compile discards its result: the forget epoch moved)."""
        with self._lock:
            keys = [k for k, j in self._jobs.items() if j.user_id == user_id]
            for key in keys:
                del self._jobs[key]
            return len(keys)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
