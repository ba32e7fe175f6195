"""What the worker threads of one run share (`RunState`), and the small rules every per-user step follows:
when an item happened, what a user's memory holds, which failures stop the run, how an error is logged.

Kept apart from `user_run` (answering) and `user_setup` (memory, profile, personas) because both use them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.progress import Progress

from persona_agent.core.errors import (
    InvalidInputError,
    PersonaAgentError,
    ProfileEchoError,
    UnknownUserError,
)
from persona_agent.core.records import EvalUser, Item
from persona_agent.core.usage import UsageReport
from persona_agent.evaluation.errors import EvalAbortedError
from persona_agent.evaluation.persist import ResultLog, Row, StateCache, row_key
from persona_agent.evaluation.plan import TaskSetup
from persona_agent.evaluation.run_config import RunConfig
from persona_agent.stores.embeddings import Embedder
from persona_agent.stores.knowledge import KnowledgeBase

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # time of an item without a timestamp: EPOCH + `order` days


def item_time(item: Item) -> datetime:
    """When an item happened: its timestamp, or a time derived from its `order` (same order, same time)."""
    return item.timestamp if item.timestamp is not None else EPOCH + timedelta(days=item.order)


def memory_items(user: EvalUser) -> tuple[Item, ...]:
    """What a user's memory holds for the whole run: everything strictly before their first query."""
    return user.profile_before(user.queries[0])


def usage_fields(usage: UsageReport) -> dict[str, Any]:
    """A row's cost columns, from the LM usage metered over its step."""
    return {
        "calls": usage.calls,
        "lm_errors": usage.errors,
        "cache_hits": usage.cache_hits,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "lm_seconds": round(usage.lm_seconds, 3),
    }


def fatal(exc: BaseException) -> bool:
    """Systemic failures stop the run; anything else (bad input, an unusable LM output such as a profile that
    echoes its prompt) is one example's or one user's failure, recorded in its row."""
    return isinstance(exc, PersonaAgentError) and not isinstance(
        exc, InvalidInputError | UnknownUserError | ProfileEchoError
    )


def describe(exc: BaseException) -> str:
    """The error type and the first line of its message. The log is committed, and an LM error's later lines
    (DSPy's `AdapterParseError` appends the whole LM response) can quote the user's data."""
    first_line = str(exc).strip().split("\n", 1)[0].strip()
    return f"{type(exc).__name__}: {first_line}"[:200]


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
