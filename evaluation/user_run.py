"""One user's part of a run, in one worker thread: memory, profile, personas, then every (method, query) row.

Per user (each step for a reason):
1. Memory: a fresh store holding only `profile_before(first query)`. Later queries of the same user use
   the same memory with `as_of` = their own time, so nothing at or after a query is ever visible, and the
   earlier queries' answers are not added (the builders' split: queries are the latest items).
2. Profile (semantic memory), built once from that memory; the initial persona is made from it.
3. Alignment, once per user and strategy, on the n items just before the first query
   (`first_alignment_batch`), each simulated at its own time, under an LM-call budget. A failed alignment
   falls back to the initial persona, with its error in the set-up row.
4. Up to `queries` queries answered by every method, one results row per (method, user, query), with
   the prediction, gold, LM calls, tokens, seconds and any error.
The profile and personas are cached per user (`StateCache`), so a resumed run does not redo them. When that
cache is gone (it is never committed) they are rebuilt with a warning, and the profile row's `profile_sha`
lets the report tell a rebuilt profile the LM wrote differently from the first. When the log lost the row of
the cached build (cut after it was built), the row is written again from the cache.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dspy
from rich.progress import Progress

from persona_agent.core.errors import (
    InvalidInputError,
    PersonaAgentError,
    ProfileEchoError,
    UnknownUserError,
)
from persona_agent.core.records import EvalUser, Item
from persona_agent.core.usage import UsageReport, track_usage
from persona_agent.evaluation.errors import EvalAbortedError
from persona_agent.evaluation.floors import majority_prediction, median_rating, nearest_label
from persona_agent.evaluation.persist import ResultLog, Row, StateCache, row_key, text_digest
from persona_agent.evaluation.plan import MethodSpec, TaskSetup, alignment_metric
from persona_agent.evaluation.run_config import RunConfig
from persona_agent.optimizers.copro import DEPTH as COPRO_DEPTH
from persona_agent.optimizers.factory import optimizer_for
from persona_agent.programs import Persona, ProfileBuilder, init_persona, make_method
from persona_agent.stores.embeddings import Embedder
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore

logger = logging.getLogger(__name__)

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # time of an item without a timestamp: EPOCH + `order` days


def item_time(item: Item) -> datetime:
    """When an item happened: its timestamp, or a time derived from its `order` (same order, same time)."""
    return item.timestamp if item.timestamp is not None else EPOCH + timedelta(days=item.order)


def memory_items(user: EvalUser) -> tuple[Item, ...]:
    """What a user's memory holds for the whole run: everything strictly before their first query."""
    return user.profile_before(user.queries[0])


def _usage_fields(usage: UsageReport) -> dict[str, Any]:
    return {
        "calls": usage.calls,
        "lm_errors": usage.errors,
        "cache_hits": usage.cache_hits,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "lm_seconds": round(usage.lm_seconds, 3),
    }


def _records_build(row: Row, entry: dict[str, Any]) -> bool:
    """Whether a logged profile row was written from this cached build: the row copies the build's usage,
    timed to the millisecond, so a rebuild differs; rows written since digests existed must match the text."""
    if "profile_sha" in row and row["profile_sha"] != text_digest(entry.get("text")):
        return False
    return all(row.get(name) == value for name, value in entry["usage"].items())


def _fatal(exc: BaseException) -> bool:
    """Systemic failures stop the run; anything else (bad input, an unusable LM output such as a profile that
    echoes its prompt) is one example's or one user's failure, recorded in its row."""
    return isinstance(exc, PersonaAgentError) and not isinstance(
        exc, InvalidInputError | UnknownUserError | ProfileEchoError
    )


def _describe(exc: BaseException) -> str:
    """The error type and the first line of its message. The log is committed, and an LM error's later lines
    (DSPy's `AdapterParseError` appends the whole LM response) can quote the user's data."""
    first_line = str(exc).strip().split("\n", 1)[0].strip()
    return f"{type(exc).__name__}: {first_line}"[:200]


def alignment_examples(user: EvalUser, setup: TaskSetup, n: int, *, as_of_input: bool = False) -> list[dspy.Example]:
    """The n items just before the first query as examples, each simulated at its own time (`as_of`).

    PersonaAligner and GEPA pass an example's `as_of` to the agent themselves. COPRO scores through DSPy's
    `Evaluate`, which calls the program with `example.inputs()` only, so for it `as_of` must be an input:
    otherwise its simulations search the whole memory, the simulated item itself included.
    """
    inputs = (setup.input_field, "as_of") if as_of_input else (setup.input_field,)
    return [
        dspy.Example({setup.input_field: it.input, setup.output_field: it.output, "as_of": item_time(it)}).with_inputs(
            *inputs
        )
        for it in user.first_alignment_batch(n)
    ]


@dataclass
class RunState:
    """What the worker threads of one invocation share: the log, the state cache, counters, the progress bar."""

    config: RunConfig
    setup: TaskSetup
    log: ResultLog
    state: StateCache
    done: dict[tuple[str, ...], Row]
    embedder: Embedder | None
    knowledge: KnowledgeBase | None
    align_threads: int
    progress: Progress
    bar: Any
    after_row: Callable[[Row], None] | None
    max_consecutive_errors: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    users_total: int = 0
    users_done: int = 0
    written: int = 0
    errors: int = 0
    consecutive_errors: int = 0

    def record(self, row: Row, *, example: bool) -> None:
        """Persist a finished row, then count it; the hook runs after the row is safely on disk."""
        self.log.append(row)
        too_many = False
        with self.lock:
            self.done[row_key(row)] = row
            if example:
                failed = row.get("error") is not None
                self.written += 1
                self.errors += failed
                self.consecutive_errors = self.consecutive_errors + 1 if failed else 0
                too_many = self.consecutive_errors >= self.max_consecutive_errors
        if example:
            self.progress.advance(self.bar)
        if too_many:
            raise EvalAbortedError(
                f"{self.consecutive_errors} examples in a row failed (last: {row['error']}); "
                "fix the cause and rerun the same command to resume (add --retry-errors to redo them)"
            )
        if self.after_row is not None:
            self.after_row(row)

    def user_done(self, key: str, examples: int, failed: int, seconds: float) -> None:
        """One line per finished user: the progress a log file of a background run shows. Users go by
        their key, as in the results log, so a saved stderr log holds no dataset ids (bylines, reviewer ids)."""
        with self.lock:
            self.users_done += 1
            count = f"{self.users_done}/{self.users_total}"
        self.progress.console.print(
            f"[{count}] {self.config.task} user {key}: {examples} examples ({failed} failed) in {seconds:.0f} s"
        )

    def status(self, text: str) -> None:
        self.progress.update(self.bar, description=f"{self.config.task} · {text}")


class UserRun:
    """One user's work (see the module docstring); call it to run."""

    def __init__(self, run: RunState, user: EvalUser, work: list[tuple[MethodSpec, Item]]) -> None:
        self.run = run
        self.user = user
        self.work = work
        self.config = run.config
        self.setup = run.setup
        self.items = memory_items(user)
        self.first = user.queries[0]
        self.state = run.state.load(user.user_id)
        self.store: MemoryStore | None = None
        self.profile_text: str | None = None
        self.personas: dict[str, Persona] = {}
        self.programs: dict[str, dspy.Module] = {}

    # -- setup ----------------------------------------------------------------------------------------

    def _open_memory(self) -> None:
        store = MemoryStore(":memory:", embedder=self.run.embedder)
        store.add(
            self.user.user_id,
            [
                {
                    "query": it.input,
                    "response": it.output,
                    "task": self.setup.task.name,
                    "created_at": item_time(it),
                    "metadata": {"item_id": it.id},
                }
                for it in self.items
            ],
        )
        self.store = store

    def _setup_row(self, stage: str, entry: dict[str, Any], *, fresh: bool, **extra: Any) -> None:
        """Record a set-up's cost: when `fresh` (just computed, or the log records another build), or when
        the log lacks it (a crash between saving the state and writing the row)."""
        if not fresh and ("setup", stage, self.user.key) in self.run.done:
            return
        row = {
            "kind": "setup",
            "task": self.setup.task.name,
            "stage": stage,
            "user": self.user.key,
            "error": entry.get("error"),
            **entry["usage"],
            **extra,
        }
        self.run.record(row, example=False)

    def _profile(self) -> str | None:
        cached = self.state.get("profile")
        fresh = cached is None
        if fresh:
            if ("setup", "profile", self.user.key) in self.run.done:
                logger.warning(
                    "%s: the log holds rows made under this user's profile, but its cached copy in %s is gone; "
                    "building it again. The LM may write another profile: the report compares answers only "
                    "with those made under the same build.",
                    self.user.key,
                    self.run.state.directory,
                )
            self.run.status(f"{self.user.key} · profile")
            builder = ProfileBuilder(max_records=self.config.profile_records)
            started = time.perf_counter()
            with track_usage() as meter:
                try:
                    text, error = builder.build(self.store, self.user.user_id, before=item_time(self.first)).text, None
                except Exception as exc:
                    if _fatal(exc):
                        raise
                    text, error = None, _describe(exc)
            usage = {**_usage_fields(meter.report()), "seconds": round(time.perf_counter() - started, 3)}
            cached = {"text": text, "error": error, "usage": usage}
            self.state["profile"] = cached
            self.run.state.save(self.user.user_id, self.state)
        else:
            if cached.get("text"):
                self.store.set_profile(self.user.user_id, cached["text"])  # a fresh store: restore semantic memory
            logged = self.run.done.get(("setup", "profile", self.user.key))
            if logged is not None and not _records_build(logged, cached):
                logger.warning(
                    "%s: the profile cached in %s is not the build the log records last (was the log cut after "
                    "it was built?); recording its row again from the cache, so answers are paired by the "
                    "profile they were made under.",
                    self.user.key,
                    self.run.state.directory,
                )
                fresh = True
        self._setup_row("profile", cached, fresh=fresh, profile_sha=text_digest(cached.get("text")))
        return cached.get("text")

    def _optimizer(self, strategy: str, log_dir: str) -> Any:
        # GEPA and COPRO are the published baselines here: they search unconstrained, as the runs' rows were made;
        # COPRO at its own depth (the iterations are PersonaAligner's).
        return optimizer_for(
            strategy,
            metric=alignment_metric(self.setup.task),
            n=self.config.align_n,
            iterations=self.config.align_iterations,
            max_lm_calls=self.config.align_budget,
            num_threads=self.run.align_threads,
            constrain=False,
            seed=self.config.seed,
            log_dir=log_dir,
            depth=COPRO_DEPTH,
        )

    def _persona(self, spec: MethodSpec) -> Persona | None:
        if spec.persona == "none":
            return None
        if "initial" not in self.personas:
            self.personas["initial"] = init_persona(self.user.user_id, self.profile_text)
        if spec.persona == "initial":
            return self.personas["initial"]
        strategy = spec.strategy or "persona_aligner"
        if strategy in self.personas:
            return self.personas[strategy]
        alignments = self.state.setdefault("alignments", {})
        cached = alignments.get(strategy)
        fresh = cached is None
        if fresh:
            self.run.status(f"{self.user.key} · align:{strategy}")
            student = self._program("persona_agent", self.personas["initial"])
            trainset = alignment_examples(self.user, self.setup, self.config.align_n, as_of_input=strategy == "copro")
            with tempfile.TemporaryDirectory(prefix="eval-align-") as log_dir:
                started = time.perf_counter()
                with track_usage() as meter:
                    try:
                        compiled = self._optimizer(strategy, log_dir).compile(student, trainset=trainset)
                        persona, trace, error = compiled.persona, compiled.alignment_trace, None
                    except Exception as exc:
                        if _fatal(exc):
                            raise
                        persona, trace, error = self.personas["initial"], None, _describe(exc)  # fall back, recorded
                seconds = time.perf_counter() - started
                run_log = Path(log_dir) / "run_log.txt"  # GEPA's progress log (`GEPARunLog`)
                log_tail = run_log.read_text(encoding="utf-8")[-4000:] if run_log.exists() else ""
            usage = {**_usage_fields(meter.report()), "seconds": round(seconds, 3)}
            cached = {"persona": persona.to_dict(), "trace": trace, "error": error, "usage": usage}
            if log_tail:
                cached["log_tail"] = log_tail
            alignments[strategy] = cached
            self.run.state.save(self.user.user_id, self.state)
        persona = Persona.from_dict(cached["persona"])
        trace = cached.get("trace") or {}
        self._setup_row(
            f"align:{strategy}",
            cached,
            fresh=fresh,
            persona_version=persona.version,
            persona_chars=len(persona.text),
            stop_reason=trace.get("stop_reason"),
            **({"persona_check": trace["persona_check"]} if "persona_check" in trace else {}),
        )
        self.personas[strategy] = persona
        return persona

    def _program(self, name: str, persona: Persona | None) -> dspy.Module:
        return make_method(
            name,
            self.setup.signature,
            store=self.store,
            user_id=self.user.user_id,
            persona=persona,
            knowledge=self.run.knowledge if self.setup.knowledge else None,
            k=self.config.k,
            max_iters=self.config.max_iters,
        )

    def _method(self, spec: MethodSpec) -> dspy.Module:
        if spec.name not in self.programs:
            self.programs[spec.name] = self._program(spec.program, self._persona(spec))
        return self.programs[spec.name]

    # -- examples -------------------------------------------------------------------------------------

    def _answer(self, spec: MethodSpec, query: Item) -> Row:
        as_of = item_time(query)
        visible = [it for it in self.items if it.order < query.order]
        program = None if spec.is_floor else self._method(spec)  # setup cost is not the example's
        self.run.status(f"{self.user.key} · {spec.name}")
        tools: list[str] = []
        started = time.perf_counter()
        with track_usage() as meter:
            try:
                if spec.name == "majority":
                    prediction = majority_prediction(self.setup.task, visible)
                elif spec.name == "median":
                    prediction = median_rating(visible)
                elif spec.name == "nearest":
                    prediction = nearest_label(self.store, self.user.user_id, query.input, as_of)
                else:
                    out = program(**{self.setup.input_field: query.input}, as_of=as_of)
                    prediction = str(out[self.setup.output_field])
                    tools = [str(step.get("tool")) for step in (out.get("trajectory") or [])]
                error = None
            except Exception as exc:
                if _fatal(exc):
                    raise
                prediction, error = None, _describe(exc)
        seconds = time.perf_counter() - started
        return {
            "kind": "prediction",
            "task": self.setup.task.name,
            "method": spec.name,
            "user": self.user.key,  # not the dataset id: results are committed, the data is not
            "query_id": query.id,
            "query_index": self.user.queries.index(query),  # no timestamp, for the same reason
            "memory_items": len(visible),
            "gold": query.output,
            "prediction": prediction,
            "error": error,
            "tools": tools,
            **_usage_fields(meter.report()),
            "seconds": round(seconds, 3),
        }

    def __call__(self) -> None:
        if self.run.stop.is_set():
            return
        started, failed = time.perf_counter(), 0
        try:
            if any(spec.needs_memory for spec, _ in self.work):
                self._open_memory()
            if any(spec.needs_profile for spec, _ in self.work):
                self.profile_text = self._profile()
            for spec, query in self.work:
                if self.run.stop.is_set():
                    return
                row = self._answer(spec, query)
                failed += row["error"] is not None
                self.run.record(row, example=True)
            self.run.user_done(self.user.key, len(self.work), failed, time.perf_counter() - started)
        finally:
            if self.store is not None:
                self.store.close()
