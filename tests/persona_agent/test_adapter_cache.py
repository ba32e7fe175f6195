"""Memoised system messages: the same messages as the plain adapter, and never a stale one across personas."""

from __future__ import annotations

import dspy

from persona_agent.lm.adapter_cache import with_system_message_cache
from persona_agent.programs import PersonaAgent, init_persona
from persona_agent.signatures import CategorizeArticle


def test_cached_adapters_format_exactly_like_plain_ones_and_follow_persona_changes():
    agent = PersonaAgent(CategorizeArticle, user_id="ann", persona=init_persona("ann", "Writes about food."))
    other = agent.with_persona(init_persona("ann", "Writes about sport."))
    inputs = {"article": "A new bakery opens", "trajectory": "(none)"}
    for plain in (dspy.ChatAdapter(), dspy.JSONAdapter()):
        cached = with_system_message_cache(plain)
        assert isinstance(cached, type(plain)) and with_system_message_cache(cached) is cached
        for predictor in (agent.respond, agent.react, other.respond):
            expected = plain.format(predictor.signature, [], inputs)
            assert cached.format(predictor.signature, [], inputs) == expected
            assert cached.format(predictor.signature, [], inputs) == expected  # from the cache
        first = cached.format(agent.respond.signature, [], inputs)[0]["content"]
        second = cached.format(other.respond.signature, [], inputs)[0]["content"]
        assert "Writes about food." in first and "Writes about sport." in second
        assert len(cached._system_messages) == 3
