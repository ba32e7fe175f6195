"""Answering with a persona program: a request's task inputs, and the `Answer` a workspace returns.

`Workspace.respond` and `arespond` pick the program (live or given version, cached) and the LM; this module holds
what does not depend on them, so the service and the CLI shape requests and answers the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dspy
from pydantic import BaseModel, ConfigDict

from persona_agent.core.errors import InvalidInputError
from persona_agent.programs.persona_agent import PersonaAgent


class Answer(BaseModel):
    """One answer of a user's live (or given) persona program."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    persona_version: int
    outputs: dict[str, Any]
    trajectory: list[dict[str, Any]]
    usage: dict[str, Any]

    @property
    def text(self) -> str:
        """The first output field, as text (the answer of a request -> response task)."""
        return str(next(iter(self.outputs.values()), ""))


def inputs_for(agent: PersonaAgent, inputs: Mapping[str, Any] | str) -> dict[str, Any]:
    """The task inputs of a request: a text goes to the task's first input field."""
    fields = list(agent.task_signature.input_fields)
    if isinstance(inputs, str):
        return {fields[0]: inputs}
    if not isinstance(inputs, Mapping) or set(inputs) != set(fields):
        shown = sorted(inputs) if isinstance(inputs, Mapping) else inputs
        raise InvalidInputError("inputs", shown, f"this user's task takes exactly the fields {fields}")
    return dict(inputs)


def answer_of(user_id: str, version: int, agent: PersonaAgent, prediction: dspy.Prediction, usage: Any) -> Answer:
    """The `Answer` of a prediction, with the usage of the meter (`track_usage`) it ran under."""
    return Answer(
        user_id=user_id,
        persona_version=version,
        outputs={k: prediction[k] for k in agent.task_signature.output_fields},
        trajectory=list(prediction.get("trajectory", [])),
        usage=usage.report().as_dict(),
    )
