"""The evaluation harness's own errors (the library's are in `persona_agent.core.errors`)."""

from __future__ import annotations

from persona_agent.core.errors import PersonaAgentError


class EvalRunMismatchError(PersonaAgentError, ValueError):
    """An evaluation run folder holds results of a different configuration; resuming would mix them."""


class EvalAbortedError(PersonaAgentError):
    """An evaluation run stopped because too many examples in a row failed (a systemic failure, not noise)."""


class EvalLogError(PersonaAgentError):
    """An evaluation results log is damaged somewhere other than a torn last line; the message names the line."""
