"""The budget guard: reservations, refunds for cache hits, typed limits."""

from __future__ import annotations

import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.usage import UsageMeter
from persona_agent.optimizers import Budget, BudgetExhaustedError
from persona_agent.optimizers.budget import BudgetTooSmallError, CallPlan, fit_calls


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


def test_fit_calls_keeps_the_batch_first_then_rounds():
    plan = {"per_example": 5, "per_round": 2}
    assert fit_calls(None, batch=3, iterations=2, **plan) == CallPlan(3, 2, capped=False)
    assert fit_calls(34, batch=3, iterations=2, **plan) == CallPlan(3, 2, capped=False)  # 2 x (15 + 2)
    assert fit_calls(33, batch=3, iterations=2, **plan) == CallPlan(3, 1, capped=True)
    assert fit_calls(16, batch=3, iterations=1, **plan) == CallPlan(2, 1, capped=True)
    assert fit_calls(7, batch=3, iterations=3, **plan) == CallPlan(1, 1, capped=True)
    assert fit_calls(20, batch=3, iterations=1, per_example=5, per_round=4, fixed=4) == CallPlan(2, 1, capped=True)


def test_fit_calls_refuses_a_cap_below_one_round_naming_the_option():
    with pytest.raises(BudgetTooSmallError) as info:
        fit_calls(6, batch=3, iterations=1, per_example=5, per_round=2)
    assert (info.value.field, info.value.value, info.value.minimum) == ("max_lm_calls", 6, 7)
    assert isinstance(info.value, InvalidInputError) and "at least 7" in str(info.value)
