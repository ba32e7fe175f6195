"""The budget guard: reservations, refunds for cache hits, typed limits."""

from __future__ import annotations

import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.usage import UsageMeter
from persona_agent.optimizers import Budget, BudgetExhaustedError


def finish(meter: UsageMeter, call_id: str, *, cached: bool) -> None:
    meter.start_call(call_id, "m")
    if not cached:
        meter.add_tokens(call_id, "m", {"prompt_tokens": 10, "completion_tokens": 5})
    meter.end_call(call_id, failed=False)


def test_calls_are_reserved_and_cache_hits_refunded():
    meter = UsageMeter()
    guard = Budget(max_lm_calls=2).guard(meter)
    guard()
    finish(meter, "a", cached=False)
    guard()
    finish(meter, "b", cached=True)  # answered by the response cache: refunded
    assert guard.spent_calls() == 1
    guard()
    finish(meter, "c", cached=False)
    with pytest.raises(BudgetExhaustedError, match="max_lm_calls=2"):
        guard()
    assert guard.exhausted == "max_lm_calls=2"


def test_in_flight_reservations_count():
    guard = Budget(max_lm_calls=2).guard(UsageMeter())
    guard()
    guard()  # two calls started, none finished yet
    with pytest.raises(BudgetExhaustedError):
        guard()


def test_token_limit():
    meter = UsageMeter()
    guard = Budget(max_tokens=15).guard(meter)
    guard()
    finish(meter, "a", cached=False)  # 15 tokens
    with pytest.raises(BudgetExhaustedError, match="max_tokens=15"):
        guard()


@pytest.mark.parametrize("field", ["max_lm_calls", "max_tokens", "max_seconds"])
def test_limits_must_be_positive(field):
    with pytest.raises(InvalidInputError, match=field):
        Budget(**{field: 0})
