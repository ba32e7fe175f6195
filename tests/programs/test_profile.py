"""ProfileBuilder: map-reduce over long histories, bounded length, stored versions with sources."""

from __future__ import annotations

from datetime import timedelta

import dspy
import pytest

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, ProfileEchoError
from persona_agent.lm.models import configure_response_cache
from persona_agent.programs import ProfileBuilder
from persona_agent.programs.profile import clamp_words
from persona_agent.programs.prompt_echo import profile_prompt
from persona_agent.testing import ScriptedLM
from tests.support import PROFILE_ECHO as ECHO

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


SUMMARY = "records, existing_profile, max_words -> profile"


def test_a_summary_that_echoes_its_prompt_is_asked_again_sampled(store, caplog):
    configure_response_cache(Settings())  # this test's own cache: the second ask must not be served from it
    lm = ScriptedLM(
        {SUMMARY: [{"profile": ECHO}, {"profile": "Reads mostly politics; labels bills politics."}]}, cache=True
    )
    with dspy.context(lm=lm):
        profile = ProfileBuilder().build(store, "alice")
    assert profile.text == "Reads mostly politics; labels bills politics." and profile.version == 1
    assert len(lm.calls) == 2 and lm.calls[0].inputs == lm.calls[1].inputs
    first, second = (entry["kwargs"] for entry in lm.history)
    assert first.get("temperature") in (None, 0.0) and "rollout_id" not in first
    assert (second["temperature"], second["rollout_id"]) == (0.7, 1)
    assert "echoes its prompt" in caplog.text


def test_a_summary_that_echoes_twice_raises_and_keeps_the_previous_profile(store):
    store.set_profile("alice", "Reads politics.")
    lm = ScriptedLM({SUMMARY: {"profile": ECHO}})
    with dspy.context(lm=lm), pytest.raises(ProfileEchoError, match="profile prompt's own text") as raised:
        ProfileBuilder().build(store, "alice")
    assert raised.value.passage in " ".join(ECHO.lower().replace(",", " ").replace("-", " ").split())
    assert len(lm.calls) == 2
    assert store.get_profile("alice").text == "Reads politics." and store.get_profile("alice").version == 1


def test_words_the_records_already_hold_are_not_an_echo(store):
    store.add("alice", [{"query": "Quiz: the labels or ratings they tend to give and when", "response": "politics"}])
    quoting = "Labels a quiz on the labels or ratings they tend to give and when as politics."
    lm = ScriptedLM({SUMMARY: {"profile": quoting}})
    with dspy.context(lm=lm):
        assert ProfileBuilder().build(store, "alice").text == quoting
    assert len(lm.calls) == 1
    assert profile_prompt().find(quoting) is not None  # without the records it would have been one


def test_a_looping_summary_keeps_each_sentence_once(store):
    """The offline model looped on its own sentences until the token cap (the demo's profile said one thing four
    times); the stored profile says it once, lines and paragraphs kept."""
    looping = (
        "The user follows AI. They read about chips. They read about chips.\n\n"
        "- Files tech stories under business.\n- files tech stories under  business.\nThey read about chips."
    )
    lm = ScriptedLM({"records, existing_profile, max_words -> profile": {"profile": looping}})
    with dspy.context(lm=lm):
        profile = ProfileBuilder().build(store, "alice")
    assert profile.text == "The user follows AI. They read about chips.\n\n- Files tech stories under business."
