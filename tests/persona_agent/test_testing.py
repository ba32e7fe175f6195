"""The scripted LM: matching by signature, both adapters, queues, callables, ReAct, errors."""

from __future__ import annotations

from typing import Literal

import dspy
import pytest

from persona_agent.testing import FILLER, ScriptedCall, ScriptedLM, ScriptError, ScriptExhaustedError


class Classify(dspy.Signature):
    """Classify the article."""

    article: str = dspy.InputField()
    profile: str = dspy.InputField()
    label: Literal["sports", "politics", "travel"] = dspy.OutputField()
    confidence: int = dspy.OutputField()


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


ADAPTERS = [dspy.ChatAdapter(), dspy.JSONAdapter()]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["chat", "json"])
def test_typed_answers_by_signature_class(adapter):
    lm = ScriptedLM({Classify: {"label": "travel", "confidence": 4}})
    with dspy.context(lm=lm, adapter=adapter):
        result = dspy.Predict(Classify)(article="Lisbon in spring", profile="likes trips")
    assert (result.label, result.confidence) == ("travel", 4)
    assert lm.calls[0].json_mode is isinstance(adapter, dspy.JSONAdapter)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["chat", "json"])
def test_callable_sees_parsed_inputs(adapter):
    seen: list[ScriptedCall] = []

    def answer(call: ScriptedCall):
        seen.append(call)
        return {"label": "sports" if "match" in call.inputs["article"] else "politics", "confidence": 1}

    lm = ScriptedLM({"article, profile -> label, confidence": answer})
    with dspy.context(lm=lm, adapter=adapter):
        predict = dspy.Predict(Classify)
        assert predict(article="The match\nwent long", profile="p").label == "sports"
        assert predict(article="A vote", profile="p").label == "politics"
    assert seen[0].inputs == {"article": "The match\nwent long", "profile": "p"}
    assert seen[0].spec == "article, profile -> label, confidence"
    assert seen[0].signature is Classify


def test_persona_rewritten_instructions_still_match_the_class():
    lm = ScriptedLM({QA: {"answer": "scripted"}})
    persona = QA.with_instructions("You answer for a film buff who likes short replies.")
    with dspy.context(lm=lm):
        assert dspy.Predict(persona)(question="Best film?").answer == "scripted"
    assert "film buff" in lm.calls[0].messages[0]["content"]


def test_chain_of_thought_gets_filler_reasoning():
    lm = ScriptedLM({QA: {"answer": "42"}})
    with dspy.context(lm=lm):
        result = dspy.ChainOfThought(QA)(question="?")
    assert (result.answer, result.reasoning) == ("42", FILLER)


def test_queue_is_consumed_in_order_then_exhausted():
    lm = ScriptedLM([{"answer": "first"}, {"answer": "second"}])
    with dspy.context(lm=lm):
        predict = dspy.Predict(QA)
        assert [predict(question="a").answer, predict(question="a").answer] == ["first", "second"]
        with pytest.raises(dspy.utils.exceptions.LMError) as info:
            predict(question="a")
    assert isinstance(info.value.__cause__, ScriptExhaustedError)


def test_most_specific_key_wins_and_star_is_the_fallback():
    lm = ScriptedLM({"*": {"answer": "default"}, "question -> answer": {"answer": "exact"}})
    with dspy.context(lm=lm):
        assert dspy.Predict(QA)(question="q").answer == "exact"
        assert dspy.Predict("topic -> answer")(topic="t").answer == "default"


def test_no_match_and_unknown_field_are_clear_errors():
    lm = ScriptedLM({QA: {"answer": "x", "bogus": 1}})
    with dspy.context(lm=lm):
        with pytest.raises(dspy.utils.exceptions.LMError) as unknown:
            dspy.Predict(QA)(question="q")
        with pytest.raises(dspy.utils.exceptions.LMError) as missing:
            dspy.Predict("topic -> summary")(topic="t")
    assert isinstance(unknown.value.__cause__, ScriptError) and "bogus" in str(unknown.value)
    assert isinstance(missing.value.__cause__, ScriptError) and "topic -> summary" in str(missing.value)


@pytest.mark.parametrize("adapter", ADAPTERS, ids=["chat", "json"])
def test_react_loop_can_be_scripted(adapter):
    def lookup(query: str) -> str:
        """Look something up."""
        return f"notes on {query}"

    steps = [
        {"next_thought": "look it up", "next_tool_name": "lookup", "next_tool_args": {"query": "paris"}},
        {"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}},
    ]
    lm = ScriptedLM(
        {
            "question, trajectory -> next_thought, next_tool_name, next_tool_args": steps,
            "question, trajectory -> answer": lambda call: {
                "answer": "Paris" if "notes on paris" in call.inputs["trajectory"] else "?"
            },
        }
    )
    with dspy.context(lm=lm, adapter=adapter):
        result = dspy.ReAct(QA, tools=[lookup], max_iters=4)(question="Capital of France?")
    assert result.answer == "Paris"
    assert result.trajectory["observation_0"] == "notes on paris"
    assert len(lm.calls) == 3


def test_usage_figures_are_reported():
    lm = ScriptedLM({QA: {"answer": "x"}})
    with dspy.context(lm=lm):
        dspy.Predict(QA)(question="q")
    usage = lm.history[-1]["usage"]
    assert usage["prompt_tokens"] > 10 and usage["completion_tokens"] >= 1


def test_direct_lm_call_without_a_signature():
    lm = ScriptedLM({"*": lambda call: {"text": "plain"}})
    assert lm("hello") == ["[[ ## text ## ]]\nplain\n\n[[ ## completed ## ]]"]
    assert lm.calls[0].output_fields == () and lm.calls[0].signature is None
