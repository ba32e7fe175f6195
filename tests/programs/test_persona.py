"""The persona value and its two-part template."""

from __future__ import annotations

import pytest

from persona_agent.core.errors import InvalidInputError, InvalidUserIdError
from persona_agent.programs.persona import (
    DEFAULT_AGENT_INSTRUCTIONS,
    NO_PROFILE,
    Persona,
    init_persona,
    persona_sections,
    render_persona,
)
from persona_agent.stores.records import Profile


def test_init_persona_has_profile_and_instructions():
    p = init_persona("alice", "Writes mostly about politics; prefers concise answers.")
    sections = persona_sections(p.text)
    assert sections["User profile"] == "Writes mostly about politics; prefers concise answers."
    assert sections["Agent instructions"] == DEFAULT_AGENT_INSTRUCTIONS
    assert (p.version, p.parent, p.source) == (0, None, "init")


def test_init_persona_from_stored_profile_or_nothing():
    from datetime import datetime

    prof = Profile(user_id="alice", version=3, text="Likes sci-fi.", created_at=datetime(2020, 1, 1), source_ids=())
    assert persona_sections(init_persona("alice", prof).text)["User profile"] == "Likes sci-fi."
    assert persona_sections(init_persona("alice").text)["User profile"] == NO_PROFILE


def test_revise_counts_versions_and_keeps_lineage():
    p0 = init_persona("alice", "x")
    p1 = p0.revise(render_persona("y"))
    assert (p1.version, p1.parent, p1.source, p1.user_id) == (1, 0, "aligned", "alice")


def test_persona_validation():
    with pytest.raises(InvalidUserIdError):
        Persona(user_id="bad id", text="t")
    with pytest.raises(InvalidInputError, match="text"):
        Persona(user_id="alice", text="   ")
