"""LM usage within a scope: calls, cache hits, prompt and completion tokens, seconds, for any backend.

`track_usage()` installs two DSPy hooks through `dspy.context`, so they follow the scope into
`dspy.Parallel` / `Evaluate` worker threads and async tasks:
- a callback (`on_lm_start` / `on_lm_end`) that counts calls, failures and seconds per call;
- a usage tracker that receives the token counts DSPy reports for each call that reached a backend.
  DSPy deep-copies the usage tracker into each `Parallel` worker (and never merges it back); ours
  returns itself from `__deepcopy__` and locks, so worker usage lands in the same scope.
A call that completes without reporting usage was answered by DSPy's response cache: a cache hit.
Calls made from threads that do not carry DSPy's context (a bare `threading.Thread`) are not seen.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.callback_context import ACTIVE_CALL_ID
from dspy.utils.usage_tracker import UsageTracker


@dataclass(frozen=True)
class UsageReport:
    """Totals of one scope. `calls` includes cache hits and excludes failed calls (`errors`)."""

    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens the backend served from its own prefix/KV cache
    lm_seconds: float = 0.0  # summed duration of the LM calls (exceeds `seconds` when calls overlap)
    seconds: float = 0.0  # wall time of the scope
    by_model: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, Any]:
        """Plain data for MLflow metrics, JSON results and service responses."""
        return {**asdict(self), "total_tokens": self.total_tokens}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class UsageMeter:
    """Live, thread-safe counters of one `track_usage()` scope (a budget may read them mid-compile)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = time.perf_counter()
        self._ended: float | None = None
        self._open: dict[str, tuple[float, str]] = {}
        self._reported: set[str] = set()
        self._totals = {
            "calls": 0,
            "cache_hits": 0,
            "errors": 0,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_prompt_tokens": 0,
        }
        self._lm_seconds = 0.0
        self._by_model: dict[str, dict[str, int]] = {}

    def _model(self, name: str) -> dict[str, int]:
        return self._by_model.setdefault(
            name, {"calls": 0, "cache_hits": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0}
        )

    # -- fed by the hooks -------------------------------------------------------------------------
    def start_call(self, call_id: str, model: str) -> None:
        with self._lock:
            self._open[call_id] = (time.perf_counter(), model)

    def add_tokens(self, call_id: str | None, model: str, usage: dict[str, Any]) -> None:
        prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
        cached = _count((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
        with self._lock:
            if call_id is not None:
                self._reported.add(call_id)
            self._totals["prompt_tokens"] += prompt
            self._totals["completion_tokens"] += completion
            self._totals["cached_prompt_tokens"] += cached
            per_model = self._model(model)
            per_model["prompt_tokens"] += prompt
            per_model["completion_tokens"] += completion

    def end_call(self, call_id: str, failed: bool) -> None:
        now = time.perf_counter()
        with self._lock:
            started, model = self._open.pop(call_id, (now, "unknown"))
            reported = call_id in self._reported
            self._reported.discard(call_id)
            self._lm_seconds += now - started
            per_model = self._model(model)
            kind = "errors" if failed else "calls"
            self._totals[kind] += 1
            per_model[kind] += 1
            if not failed and not reported:
                self._totals["cache_hits"] += 1
                per_model["cache_hits"] += 1

    def close(self) -> None:
        with self._lock:
            self._ended = time.perf_counter()

    # -- read by callers --------------------------------------------------------------------------
    def report(self) -> UsageReport:
        """A snapshot; call it inside the scope for running totals or after it for the final ones."""
        with self._lock:
            end = self._ended if self._ended is not None else time.perf_counter()
            return UsageReport(
                **self._totals,
                lm_seconds=self._lm_seconds,
                seconds=end - self._started,
                by_model={name: dict(values) for name, values in self._by_model.items()},
            )

    @property
    def calls(self) -> int:
        with self._lock:
            return self._totals["calls"] + self._totals["errors"]


class _MeterCallback(BaseCallback):
    def __init__(self, meter: UsageMeter) -> None:
        self.meter = meter

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.meter.start_call(call_id, getattr(instance, "model", type(instance).__name__))

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        self.meter.end_call(call_id, failed=exception is not None)


class _MeterTracker(UsageTracker):
    """DSPy's usage-tracker interface, shared (not copied) across worker threads, forwarding to its parent."""

    def __init__(self, meter: UsageMeter, parent: UsageTracker | None) -> None:
        super().__init__()
        self.meter = meter
        self.parent = parent
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, Any]) -> _MeterTracker:
        return self

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        with self._lock:
            super().add_usage(lm, usage_entry)
        self.meter.add_tokens(ACTIVE_CALL_ID.get(), lm, usage_entry)
        if self.parent is not None:
            self.parent.add_usage(lm, usage_entry)


@contextmanager
def track_usage() -> Iterator[UsageMeter]:
    """Record every LM call made in this scope (any backend, any DSPy thread or task).

    >>> with track_usage() as usage:
    ...     program(question="...")
    >>> usage.report().as_dict()
    """
    meter = UsageMeter()
    tracker = _MeterTracker(meter, dspy.settings.usage_tracker)
    callbacks = [*(dspy.settings.get("callbacks") or []), _MeterCallback(meter)]
    try:
        with dspy.context(usage_tracker=tracker, callbacks=callbacks):
            yield meter
    finally:
        meter.close()


__all__ = ["UsageMeter", "UsageReport", "track_usage"]
