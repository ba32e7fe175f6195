"""What a failed example or alignment writes into the committed log."""

from __future__ import annotations

import dspy
from dspy.utils.exceptions import AdapterParseError

from persona_agent.evaluation.run_state import describe


def test_an_adapter_parse_error_is_logged_without_the_lm_response():
    """DSPy appends the whole LM response to the message; it can quote a user's reviews, so it stays out."""
    response = '{"proposed_instruction": "The user rates every kazoo they buy with five stars"'
    exc = AdapterParseError("JSONAdapter", dspy.Signature("question -> answer"), response)
    described = describe(exc)
    assert described.startswith("AdapterParseError: Adapter JSONAdapter failed to parse the LM response.")
    assert "kazoo" not in described and "\n" not in described
