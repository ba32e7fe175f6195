"""Compile budgets: composable stop conditions checked before every LM step.

A `Budget` is installed for a compile with `budget.guard(meter)`; the guard is called by the program
step drivers before each predictor call (see `persona_agent.programs.steps`) and raises
`BudgetExhaustedError` instead of making a call the budget does not allow. Steps are reserved under a lock,
so parallel simulations never overrun the call budget. Token and time limits are checked against
finished calls, so calls already in flight when a limit is reached may complete. Calls answered by
DSPy's response cache are not charged.

`fit_calls` plans a compile under a call cap before it starts: the largest batch (then the most rounds) whose
worst case still leaves room for every phase of a round, so a capped compile completes an update instead of
spending the cap on simulations; a cap too small for one example's round is refused with the minimum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from persona_agent.core.errors import InvalidInputError, PersonaAgentError
from persona_agent.core.usage import UsageMeter


class BudgetExhaustedError(PersonaAgentError):
    """A compile reached its budget; `reason` names the limit (e.g. 'max_lm_calls=40')."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"budget reached: {reason}")


class BudgetTooSmallError(InvalidInputError):
    """A call cap below one complete round on one example; refused before any call. `minimum` is what it needs."""

    def __init__(self, limit: int, minimum: int, what: str) -> None:
        self.minimum = minimum
        reason = f"is below the {minimum} LM calls {what} needs at most; give at least {minimum}"
        super().__init__("max_lm_calls", limit, reason)


@dataclass(frozen=True)
class CallPlan:
    """The batch size and rounds a compile runs, and whether a call cap shrank them."""

    batch: int
    iterations: int
    capped: bool


def fit_calls(
    limit: int | None, *, batch: int, iterations: int, per_example: int, per_round: int, fixed: int = 0
) -> CallPlan:
    """The largest batch, then the most rounds (each at most as asked), whose worst case fits `limit`.

    A round on `b` examples costs at most `b * per_example + per_round` calls (the simulations and losses, then
    the gradient, update and any acceptance check), on top of `fixed` (a one-off evaluation). Raises
    `BudgetTooSmallError` when even one round on one example does not fit."""
    for name, value in (("batch", batch), ("iterations", iterations), ("per_example", per_example)):
        if value < 1:
            raise InvalidInputError(name, value, "must be at least 1")
    if limit is None:
        return CallPlan(batch, iterations, capped=False)
    minimum = fixed + per_example + per_round
    if limit < minimum:
        raise BudgetTooSmallError(limit, minimum, "one alignment round on one example")
    size = min(batch, (limit - fixed - per_round) // per_example)
    rounds = min(iterations, (limit - fixed) // (size * per_example + per_round))
    return CallPlan(size, rounds, capped=(size, rounds) != (batch, iterations))


@dataclass(frozen=True)
class Budget:
    """Limits for one compile; None means unlimited."""

    max_lm_calls: int | None = None
    max_tokens: int | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_lm_calls", "max_tokens", "max_seconds"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise InvalidInputError(name, value, "must be a positive number or None")

    def guard(self, meter: UsageMeter) -> BudgetGuard:
        return BudgetGuard(self, meter)


class BudgetGuard:
    """Called before each LM step; reserves the step or raises `BudgetExhaustedError`."""

    def __init__(self, budget: Budget, meter: UsageMeter) -> None:
        self.budget = budget
        self.meter = meter
        self.reserved = 0
        self.exhausted: str | None = None  # the first limit reached, kept even if a caller swallows the error
        self._started = time.perf_counter()
        self._lock = threading.Lock()
        self.conditions: list[Callable[[], str | None]] = [self._calls, self._tokens, self._seconds]

    def spent_calls(self) -> int:
        """LM calls charged so far: every reserved or finished call, less those the response cache
        answered (they cost nothing, so a strategy that re-evaluates a candidate is not charged twice)."""
        return max(self.reserved, self.meter.calls) - self.meter.report().cache_hits

    def _calls(self) -> str | None:
        limit = self.budget.max_lm_calls
        if limit is not None and self.spent_calls() + 1 > limit:
            return f"max_lm_calls={limit}"
        return None

    def _tokens(self) -> str | None:
        limit = self.budget.max_tokens
        if limit is not None and self.meter.report().total_tokens >= limit:
            return f"max_tokens={limit}"
        return None

    def _seconds(self) -> str | None:
        limit = self.budget.max_seconds
        if limit is not None and time.perf_counter() - self._started >= limit:
            return f"max_seconds={limit}"
        return None

    def __call__(self) -> None:
        with self._lock:
            for condition in self.conditions:
                reason = condition()
                if reason is not None:
                    self.exhausted = self.exhausted or reason
                    raise BudgetExhaustedError(reason)
            self.reserved += 1
