"""Usage accounting with the scripted LM: calls, tokens, cache hits, errors, threads, tasks, nesting."""

from __future__ import annotations

import asyncio

import dspy
import pytest

from persona_agent.core.config import Settings
from persona_agent.core.usage import UsageReport, track_usage
from persona_agent.lm.models import configure_response_cache
from persona_agent.testing import ScriptedLM


def _echo(call):
    return {"answer": call.inputs["question"][::-1]}


def _history_tokens(lm) -> tuple[int, int]:
    entries = [entry["usage"] for entry in lm.history]
    return sum(u.get("prompt_tokens", 0) for u in entries), sum(u.get("completion_tokens", 0) for u in entries)


def test_counts_calls_and_tokens_as_reported_by_the_backend():
    lm = ScriptedLM({"question -> answer": _echo})
    with dspy.context(lm=lm), track_usage() as usage:
        for q in ["one", "two", "three"]:
            dspy.Predict("question -> answer")(question=q)
    report = usage.report()
    assert (report.calls, report.cache_hits, report.errors) == (3, 0, 0)
    assert (report.prompt_tokens, report.completion_tokens) == _history_tokens(lm)
    assert report.prompt_tokens > 0 and report.total_tokens == report.prompt_tokens + report.completion_tokens
    assert report.by_model["scripted/lm"]["calls"] == 3
    assert 0 < report.lm_seconds <= report.seconds
    assert set(report.as_dict()) >= {"calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds"}


def test_cache_hits_are_counted_and_cost_no_tokens():
    configure_response_cache(Settings())  # this test's own home, so no earlier run's entries
    lm = ScriptedLM({"question -> answer": _echo}, cache=True)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm), track_usage() as usage:
        first = predict(question="same")
        once = usage.report()
        second = predict(question="same")
    report = usage.report()
    assert first.answer == second.answer
    assert (report.calls, report.cache_hits) == (2, 1)
    assert report.prompt_tokens == once.prompt_tokens and len(lm.calls) == 1


def test_failed_calls_are_errors_not_calls():
    lm = ScriptedLM({"question -> answer": [{"answer": "only one"}]})
    with dspy.context(lm=lm), track_usage() as usage:
        dspy.Predict("question -> answer")(question="a")
        with pytest.raises(dspy.utils.exceptions.LMError):
            dspy.Predict("question -> answer")(question="b")
    report = usage.report()
    assert (report.calls, report.errors, report.cache_hits) == (1, 1, 0)


def test_parallel_worker_threads_are_counted():
    lm = ScriptedLM({"question -> answer": _echo})
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm), track_usage() as usage:
        results = dspy.Parallel(num_threads=3, disable_progress_bar=True)(
            [(predict, {"question": f"q{i}"}) for i in range(6)]
        )
    assert [r.answer for r in results] == [f"q{i}"[::-1] for i in range(6)]
    report = usage.report()
    assert report.calls == 6 and (report.prompt_tokens, report.completion_tokens) == _history_tokens(lm)


def test_async_tasks_are_counted():
    lm = ScriptedLM({"question -> answer": _echo})
    predict = dspy.Predict("question -> answer")

    async def run():
        with dspy.context(lm=lm):
            return await asyncio.gather(*(predict.acall(question=f"a{i}") for i in range(3)))

    with track_usage() as usage:
        results = asyncio.run(run())
    assert [r.answer for r in results] == ["0a", "1a", "2a"]
    assert usage.report().calls == 3


def test_nested_scopes_each_see_their_own_calls():
    lm = ScriptedLM({"question -> answer": _echo})
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm), track_usage() as outer:
        predict(question="before")
        with track_usage() as inner:
            predict(question="inside")
        predict(question="after")
    assert inner.report().calls == 1 and inner.report().cache_hits == 0
    assert outer.report().calls == 3 and outer.report().cache_hits == 0
    assert outer.report().prompt_tokens > inner.report().prompt_tokens


def test_forwards_to_an_enclosing_dspy_usage_tracker():
    lm = ScriptedLM({"question -> answer": _echo})
    with dspy.context(lm=lm), dspy.track_usage() as dspy_tracker, track_usage() as usage:
        dspy.Predict("question -> answer")(question="x")
    totals = dspy_tracker.get_total_tokens()["scripted/lm"]
    assert totals["prompt_tokens"] == usage.report().prompt_tokens


def test_live_counts_and_frozen_report_after_exit():
    lm = ScriptedLM({"question -> answer": _echo})
    with dspy.context(lm=lm), track_usage() as usage:
        assert usage.calls == 0
        dspy.Predict("question -> answer")(question="x")
        assert usage.calls == 1
    after = usage.report()
    assert isinstance(after, UsageReport) and usage.report().seconds == after.seconds
    with dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question="outside")
    assert usage.report().calls == 1 and len(lm.calls) == 2
