"""The lean JSON adapter: short prompt, same parsing and schema constraint as JSONAdapter."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import dspy

from persona_agent.testing import ScriptedLM


def _benchmark_module(name: str):
    """A module of `benchmarks/` (scripts, not a package: they import each other by file name)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LeanJSONAdapter = _benchmark_module("lean_adapter").LeanJSONAdapter


class Topic(dspy.Signature):
    """Classify the news text into one topic."""

    text: str = dspy.InputField()
    topic: Literal["sports", "politics"] = dspy.OutputField(desc="the main topic")
    score: int = dspy.OutputField()


def test_prompt_is_short_and_complete():
    lm = ScriptedLM({Topic: {"topic": "politics", "score": 2}})
    predict = dspy.Predict(Topic)
    predict.demos = [dspy.Example(text="A late vote", topic="politics", score=1)]
    with dspy.context(lm=lm, adapter=LeanJSONAdapter()):
        result = predict(text="The senate met.")
    assert (result.topic, result.score) == ("politics", 2)
    system, demo_in, demo_out, user = lm.calls[0].messages
    assert system["content"] == (
        "Classify the news text into one topic.\n\nReply with only a JSON object with these keys:\n"
        '- "topic": one of: sports; politics (the main topic)\n- "score": int'
    )
    assert demo_in["content"] == "text: A late vote" and user["content"] == "text: The senate met."
    assert '"topic": "politics"' in demo_out["content"]
    assert lm.calls[0].json_mode  # the JSON schema constraint is still requested


def test_prompt_is_much_shorter_than_json_adapters():
    sizes = {}
    for name, adapter in {"json": dspy.JSONAdapter(), "lean": LeanJSONAdapter()}.items():
        lm = ScriptedLM({Topic: {"topic": "sports", "score": 1}})
        with dspy.context(lm=lm, adapter=adapter):
            dspy.Predict(Topic)(text="Goal!")
        sizes[name] = sum(len(m["content"]) for m in lm.calls[0].messages)
    assert sizes["lean"] < sizes["json"] / 2
