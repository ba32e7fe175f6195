"""Compiling many users at once: select who needs it, optimize in workers, commit in the driver.

DuckDB has one writer, so the work is split: the driver plans each user (`plan_compile`: reads their latest
interactions, profile and live persona, and creates version 0 if missing), workers run the optimizer (LM calls
only), and the driver commits each result as it arrives (`run_compile` with the worker's persona: registry row,
MLflow run, promote). With the `local` runner a worker gets the plan itself (threads share the workspace, reads
only); with `ray` it gets a `Snapshot` (plain data) and rebuilds the student over an in-memory store.

Idempotent: a user is committed at most once per run (a retried job only re-runs the optimizer), and each
committed version records the interaction watermark it was compiled at (`usage.interaction_watermark`, the
store-wide insertion counter `seq` of the newest interaction), so a rerun selects only users with at least
`min_new` interactions past it (a compile that kept its base persona records the watermark on the base).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from persona_agent.compiling import CompileOptions, CompilePlan, CompileResult, plan_compile, run_compile
from persona_agent.core.errors import InvalidInputError, PersonaAgentError
from persona_agent.fanout_worker import Optimized, Snapshot, WorkerSetup, optimize_plan, optimize_snapshot
from persona_agent.optimizers.budget import Budget
from persona_agent.programs.persona import Persona
from persona_agent.programs.saved import program_document
from persona_agent.runners import InlineRunner, Job, JobOutcome, Runner, run_jobs
from persona_agent.workspace import Workspace

WATERMARK = "interaction_watermark"
__all__ = [
    "Budget",
    "Candidate",
    "CompileJobError",
    "FanoutReport",
    "compile_all",
    "compile_planned",
    "select_users",
    "snapshot_of",
    "watermark_of",
]

_NEW = (  # an interaction a compile learns from: a real response, not a note nor the agent's own answer
    "response <> '' AND coalesce(task, '') <> 'note' "
    "AND coalesce(json_extract_string(metadata, '$.source'), '') <> 'agent'"
)
_SELECT = f"""
WITH live AS (
    SELECT l.user_id, coalesce(TRY_CAST(json_extract_string(p.usage, '$.{WATERMARK}') AS BIGINT), 0) AS w
    FROM persona_live l JOIN personas p ON p.user_id = l.user_id AND p.version = l.version
)
SELECT i.user_id, count(*) FILTER (WHERE i.seq > coalesce(live.w, 0)) AS new, max(i.seq) AS watermark
FROM interactions i LEFT JOIN live ON live.user_id = i.user_id
WHERE {_NEW}
GROUP BY i.user_id
"""


class CompileJobError(PersonaAgentError):
    """A compile job failed on every attempt; the message is the last attempt's error."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


@dataclass(frozen=True)
class Candidate:
    """A user to compile: interactions past their live persona's watermark, and the newest one's `seq`."""

    user_id: str
    new: int
    watermark: int


def spent(budget: Budget, calls: int, tokens: int, seconds: float) -> str | None:
    """The first limit of a fan-out's total `budget` reached, by name, or None (no new user starts then)."""
    for name, used in (("max_lm_calls", calls), ("max_tokens", tokens), ("max_seconds", seconds)):
        limit = getattr(budget, name)
        if limit is not None and used >= limit:
            return name
    return None


@dataclass
class FanoutReport:
    """What `compile_all` did, per user; `write_seconds` is the driver's time committing (its throughput)."""

    compiled: list[CompileResult] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    lm_calls: int = 0
    tokens: int = 0
    seconds: float = 0.0
    write_seconds: float = 0.0
    stopped_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "compiled": [r.user_id for r in self.compiled],
            "failed": self.failed,
            "skipped": self.skipped,
            "attempts": self.attempts,
            "lm_calls": self.lm_calls,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 3),
            "write_seconds": round(self.write_seconds, 3),
            "stopped_by": self.stopped_by,
        }


class Progress:
    """Progress callbacks of a fan-out (no-ops; the CLI passes a Rich one)."""

    def start(self, total: int) -> None: ...

    def done(self, user_id: str, ok: bool) -> None: ...


def select_users(
    workspace: Workspace,
    min_new: int = 1,
    users: list[str] | None = None,
    priority: Callable[[Candidate], Any] | None = None,
) -> list[Candidate]:
    """Users with at least `min_new` interactions (with a real response) past their live persona's watermark,
    in priority order (default: most new interactions first, then by id); `users` limits the choice."""
    if min_new < 1:
        raise InvalidInputError("min_new", min_new, "must be at least 1")
    wanted = set(users) if users is not None else None
    found = [
        Candidate(user, int(new), int(mark))
        for user, new, mark in workspace.store.query(_SELECT)
        if new >= min_new and (wanted is None or user in wanted)
    ]
    return sorted(found, key=priority or (lambda c: (-c.new, c.user_id)))


def watermark_of(workspace: Workspace, user_id: str) -> int:
    """The `seq` of the user's newest interaction a compile learns from (0 if none)."""
    rows = workspace.store.query(
        f"SELECT coalesce(max(seq), 0) FROM interactions WHERE user_id = ? AND {_NEW}", [user_id]
    )
    return int(rows[0][0])


def compile_planned(workspace: Workspace, plan: CompilePlan, *, retries: int = 2) -> tuple[CompileResult, int]:
    """One planned compile in this thread: the optimizer retried up to `retries` times (`run_jobs`), then one
    commit, so a retry never makes two versions; returns the result and the attempts. All attempts failed:
    `CompileJobError`."""
    watermark = watermark_of(workspace, plan.user_id)  # read before the optimizer: later rows are new next time
    job = Job(plan.user_id, optimize_plan, (workspace, plan))
    outcome = next(run_jobs(InlineRunner(), [job], retries=retries))
    if not outcome.ok:
        raise CompileJobError(outcome.error or "failed", outcome.attempts)
    return commit(workspace, plan, outcome.value, watermark), outcome.attempts


def snapshot_of(workspace: Workspace, plan: CompilePlan) -> Snapshot:
    """What a worker in another process needs to run the optimizer, as plain data."""
    store, user = workspace.store, plan.user_id
    profile = store.get_profile(user)
    interactions = [
        {"query": i.query, "response": i.response, "created_at": i.created_at, "task": i.task, "metadata": i.metadata}
        for i in store.history(user)
    ]
    return Snapshot(
        user_id=user,
        options=plan.options.model_dump(),
        document=program_document(plan.student),
        trainset=[dict(example) for example in plan.trainset],
        input_keys=sorted(plan.trainset[0].inputs().keys()) if plan.trainset else [],
        interactions=interactions,
        profile=profile.text if profile is not None else None,
    )


class _Precompiled:
    """An optimizer whose result a worker already computed: `run_compile` commits it unchanged."""

    def __init__(self, persona: Persona | None, trace: dict[str, Any]) -> None:
        self.result = _Result(persona, trace)

    def compile(self, student: Any, *, trainset: Any) -> _Result:
        return self.result


@dataclass
class _Result:
    persona: Persona | None
    alignment_trace: dict[str, Any]


def commit(workspace: Workspace, plan: CompilePlan, optimized: Optimized, watermark: int) -> CompileResult:
    """Commit a worker's result in the driver (`run_compile`), recording the interaction watermark."""
    trace = dict(optimized.trace)
    trace["usage"] = {**trace.get("usage", {}), WATERMARK: watermark}
    persona = (
        Persona(user_id=plan.user_id, text=optimized.persona_text, source="aligned")
        if optimized.persona_text is not None
        else None
    )
    result = run_compile(workspace, replace(plan, optimizer=_Precompiled(persona, trace)))
    if not result.changed:
        _confirm(workspace, plan.user_id, result.version, watermark)
    return result.model_copy(update={"seconds": round(optimized.seconds + result.seconds, 3)})


def _confirm(workspace: Workspace, user_id: str, version: int, watermark: int) -> None:
    """A compile that kept its base confirms it at this watermark: recorded in the base's `usage`, so a rerun
    does not redo it (a forgotten user's rows are gone: nothing is updated)."""
    with workspace.commit_lock, workspace.store.transaction() as cur:
        cur.execute(
            "UPDATE personas SET usage = json_merge_patch(usage, ?) WHERE user_id = ? AND version = ?",
            [json.dumps({WATERMARK: watermark}), user_id, version],
        )


def _jobs(
    workspace: Workspace,
    candidates: list[Candidate],
    options: CompileOptions,
    runner: Runner,
    setup: WorkerSetup | None,
    report: FanoutReport,
    plans: dict[str, tuple[CompilePlan, int]],
) -> Iterator[Job]:
    """Plan each user lazily (in the driver: reads, and version 0 if missing) and make its job."""
    for candidate in candidates:
        try:
            plan = plan_compile(workspace, candidate.user_id, options)
        except (ValueError, LookupError) as exc:
            report.skipped[candidate.user_id] = str(exc)
            continue
        plans[plan.user_id] = (plan, candidate.watermark)
        if runner.name == "local":
            yield Job(plan.user_id, optimize_plan, (workspace, plan))
        else:
            yield Job(plan.user_id, optimize_snapshot, (snapshot_of(workspace, plan), setup))


def compile_all(
    workspace: Workspace,
    options: CompileOptions,
    runner: Runner,
    *,
    min_new: int = 1,
    users: list[str] | None = None,
    retries: int = 2,
    budget: Budget | None = None,
    setup: WorkerSetup | None = None,
    progress: Progress | None = None,
) -> FanoutReport:
    """Compile every selected user (`select_users`) on `runner`, committing in this thread as results arrive.

    `setup` tells a `ray` worker how to build its LM and embedder (default: from its settings). A user whose
    job still fails after `retries` retries is reported in `failed`; the others go on. With a `budget`, no
    new user starts once it is spent (the rest are reported in `skipped`)."""
    if retries < 0:
        raise InvalidInputError("retries", retries, "must be at least 0")
    started, budget, progress = time.perf_counter(), budget or Budget(), progress or Progress()
    report = FanoutReport()
    candidates = select_users(workspace, min_new, users)
    progress.start(len(candidates))
    plans: dict[str, tuple[CompilePlan, int]] = {}

    def more() -> bool:
        report.stopped_by = spent(budget, report.lm_calls, report.tokens, time.perf_counter() - started)
        return report.stopped_by is None

    jobs = _jobs(workspace, candidates, options, runner, setup or WorkerSetup(workspace.settings), report, plans)
    # A backlog of twice the workers keeps them busy while the driver commits (a thread pool or Ray queues it);
    # under a budget, only `workers` are in flight, so at most that many start past it.
    limited = budget != Budget()
    backlog = runner.workers if limited else 2 * runner.workers
    processes = workspace.settings.fanout_tracking_processes
    tracking = workspace.deferred_tracking(processes) if processes else contextlib.nullcontext({})
    with tracking as tracked:
        for outcome in run_jobs(runner, jobs, retries=retries, more=more, in_flight=backlog, overlap=not limited):
            _record(workspace, report, plans.pop(outcome.key), outcome)
            progress.done(outcome.key, outcome.key not in report.failed)
    report.compiled = [_with_tracking(result, tracked) for result in report.compiled]
    for candidate in candidates:
        seen = candidate.user_id in report.attempts or candidate.user_id in report.skipped
        if not seen:
            report.skipped[candidate.user_id] = f"budget spent ({report.stopped_by})"
    report.seconds = time.perf_counter() - started
    return report


def _with_tracking(result: CompileResult, tracked: dict) -> CompileResult:
    """A result whose MLflow work ran in a tracking process, with the run id and error it returned."""
    done = tracked.get((result.user_id, result.version))
    if done is None:
        return result
    update = {"mlflow_run_id": done.run_id, "model_version": done.model_version, "tracking_error": done.error}
    return result.model_copy(update=update)


def _record(workspace: Workspace, report: FanoutReport, planned: tuple[CompilePlan, int], outcome: JobOutcome) -> None:
    """Commit one outcome (once: the driver sees each user's outcome once) and count its usage."""
    plan, watermark = planned
    report.attempts[outcome.key] = outcome.attempts
    if not outcome.ok:
        report.failed[outcome.key] = outcome.error or "failed"
        return
    optimized: Optimized = outcome.value
    usage = optimized.trace.get("usage", {})
    report.lm_calls += int(usage.get("calls", 0))
    report.tokens += int(usage.get("total_tokens", 0))
    began = time.perf_counter()
    try:
        report.compiled.append(commit(workspace, plan, optimized, watermark))
    except PersonaAgentError as exc:
        report.failed[outcome.key] = f"{type(exc).__name__}: {exc}"
    finally:
        report.write_seconds += time.perf_counter() - began
