"""ProfileBuilder: map-reduce over long histories, bounded length, stored versions with sources."""

from __future__ import annotations

from datetime import timedelta

import dspy
import pytest

from persona_agent.errors import InvalidInputError
from persona_agent.programs import ProfileBuilder
from persona_agent.programs.profile import clamp_words
from persona_agent.testing import ScriptedLM

from .conftest import T0


def echo_profile(call):
    lines = call.inputs["records"].count("\n") + 1
    return {"profile": f"summary of {lines} lines; prior={call.inputs['existing_profile'][:20]}"}


def test_short_history_is_one_call_and_stored_with_sources(store):
    lm = ScriptedLM({"records, existing_profile, max_words -> profile": echo_profile})
    with dspy.context(lm=lm):
        profile = ProfileBuilder(chunk_size=10).build(store, "alice")
    assert len(lm.calls) == 1
    assert profile.text == "summary of 4 lines; prior=none"
    assert profile.version == 1 and len(profile.source_ids) == 4
    assert store.get_profile("alice") == profile
    assert "Senate passes the infrastructure bill" in lm.calls[0].inputs["records"]
    assert "Championship final" not in lm.calls[0].inputs["records"]  # bob's rows


def test_long_history_is_map_reduced(store):
    store.add(
        "alice",
        [
            {"query": f"article {i}", "response": "politics", "created_at": T0 + timedelta(days=10 + i)}
            for i in range(21)
        ],
    )
    lm = ScriptedLM({"records, existing_profile, max_words -> profile": echo_profile})
    with dspy.context(lm=lm):
        out = ProfileBuilder(chunk_size=5).build(store, "alice")  # 25 records -> 5 maps, then 1 reduce
    assert len(lm.calls) == 6
    assert [c.inputs["existing_profile"] for c in lm.calls[:5]] == ["none"] * 5
    assert lm.calls[5].inputs["records"].count("partial profile") == 5
    assert len(out.source_ids) == 25


def test_before_cutoff_and_rebuild_rule(store):
    lm = ScriptedLM({"records, existing_profile, max_words -> profile": echo_profile})
    builder = ProfileBuilder()
    with dspy.context(lm=lm):
        first = builder.build(store, "alice", before=T0 + timedelta(days=2))
    assert len(first.source_ids) == 2
    assert builder.needs_rebuild(store, "alice", min_new=2)
    assert not builder.needs_rebuild(store, "alice", min_new=3)
    with dspy.context(lm=lm):
        assert builder.maybe_rebuild(store, "alice", min_new=3) is None
        assert builder.maybe_rebuild(store, "alice", min_new=2).version == 2


def test_length_is_bounded():
    text = "One fact. " * 100
    assert len(clamp_words(text, 12).split()) <= 12
    lm = ScriptedLM({"records, existing_profile, max_words -> profile": {"profile": "word " * 500}})
    from persona_agent.stores.records import Interaction

    rec = Interaction(id="m", user_id="u", created_at=T0, task=None, query="q", response="r", metadata={})
    with dspy.context(lm=lm):
        assert len(ProfileBuilder(max_words=30)(records=[rec]).profile.split()) == 30


def test_each_call_caps_the_lms_output_at_what_the_length_limit_keeps():
    from persona_agent.stores.records import Interaction

    rec = Interaction(id="m", user_id="u", created_at=T0, task=None, query="q", response="r", metadata={})
    lm = ScriptedLM({"records, existing_profile, max_words -> profile": {"profile": "a short profile"}})
    with dspy.context(lm=lm):
        ProfileBuilder(max_words=30)(records=[rec])
        ProfileBuilder(max_words=30, max_tokens=500)(records=[rec])
    assert [entry["kwargs"]["max_tokens"] for entry in lm.history] == [2 * 30 + 64, 500]


def test_bad_arguments():
    with pytest.raises(InvalidInputError, match="chunk_size"):
        ProfileBuilder(chunk_size=0)
    with pytest.raises(InvalidInputError, match="max_tokens"):
        ProfileBuilder(max_tokens=0)
    with pytest.raises(InvalidInputError, match="records"):
        ProfileBuilder()(records=[])
