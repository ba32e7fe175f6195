"""How to rebuild the agent a saved state belongs to: its task signature, tools and loop settings.

A saved program carries this as its `program` entry (see `persona_agent.programs.documents`); the signature is
named, and rebuilt from the saved field names when it is not one of ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dspy

from persona_agent.core.errors import ProgramFormatError
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.tools import ALL_TOOLS
from persona_agent.signatures.tasks import (
    CategorizeArticle,
    ChooseCitation,
    GenerateHeadline,
    PersonalizedRequest,
    RateReview,
    TagMovie,
)
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore

KNOWN_SIGNATURES: dict[str, type[dspy.Signature]] = {
    s.__name__: s
    for s in (PersonalizedRequest, CategorizeArticle, TagMovie, RateReview, ChooseCitation, GenerateHeadline)
}


def fields_of(signature: type[dspy.Signature]) -> tuple[list[str], list[str]]:
    return list(signature.input_fields), list(signature.output_fields)


@dataclass(frozen=True)
class ProgramSpec:
    """How to build the agent a document's state belongs to (everything but the persona and the state)."""

    signature: type[dspy.Signature] = PersonalizedRequest
    tools: tuple[str, ...] = ALL_TOOLS
    max_iters: int = 3
    use_actions: bool = True
    allow_updates: bool = True
    task: str | None = None
    mode: str = "auto"
    k: int = 5
    _key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sig = self.signature
        object.__setattr__(self, "tools", tuple(self.tools))
        # Not id(sig): a signature rebuilt from a document is a new class each time, with the same meaning.
        shape = (sig.__module__, sig.__name__, *fields_of(sig), sig.instructions)
        key = (shape, self.tools, self.max_iters, self.use_actions, self.allow_updates, self.task, self.mode, self.k)
        object.__setattr__(self, "_key", repr(key))

    @classmethod
    def of(cls, agent: PersonaAgent) -> ProgramSpec:
        return cls(
            signature=agent.task_signature,
            tools=agent.tool_names,
            max_iters=agent.max_iters,
            use_actions=agent.use_actions,
            allow_updates=agent.allow_updates,
            task=agent.task,
            mode=agent.mode,
            k=agent.k,
        )

    def to_dict(self) -> dict[str, Any]:
        sig = self.signature
        return {
            "signature": {
                "name": sig.__name__,
                "inputs": list(sig.input_fields),
                "outputs": list(sig.output_fields),
                "instructions": sig.instructions,
            },
            "tools": list(self.tools),
            "max_iters": self.max_iters,
            "use_actions": self.use_actions,
            "allow_updates": self.allow_updates,
            "task": self.task,
            "mode": self.mode,
            "k": self.k,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], signature: type[dspy.Signature] | None = None) -> ProgramSpec:
        try:
            return cls(
                signature=resolve_signature(data["signature"], signature),
                tools=tuple(data.get("tools", ALL_TOOLS)),
                max_iters=int(data.get("max_iters", 3)),
                use_actions=bool(data.get("use_actions", True)),
                allow_updates=bool(data.get("allow_updates", True)),
                task=data.get("task"),
                mode=str(data.get("mode", "auto")),
                k=int(data.get("k", 5)),
            )
        except (KeyError, TypeError) as exc:
            raise ProgramFormatError(f"the saved program's 'program' entry is malformed ({exc!r})") from None

    def build(self, user_id: str, *, store: MemoryStore | None = None, knowledge: KnowledgeBase | None = None):
        return PersonaAgent(
            self.signature,
            user_id=user_id,
            store=store,
            tools=self.tools or ALL_TOOLS,
            knowledge=knowledge,
            max_iters=self.max_iters,
            use_actions=self.use_actions and bool(self.tools),
            allow_updates=self.allow_updates,
            task=self.task,
            mode=self.mode,  # type: ignore[arg-type]
            k=self.k,
        )


def resolve_signature(saved: Mapping[str, Any], given: type[dspy.Signature] | None = None) -> type[dspy.Signature]:
    """The task signature a document names: `given` if passed (it must have the saved fields), one of ours by
    name, or, for all-text fields, one rebuilt from the saved field names and instructions."""
    inputs, outputs = list(saved.get("inputs", [])), list(saved.get("outputs", []))
    if given is not None:
        if fields_of(given) != (inputs, outputs):
            raise ProgramFormatError(
                f"the given signature {given.__name__} has fields {fields_of(given)}; the program was saved with "
                f"{(inputs, outputs)}"
            )
        return given
    known = KNOWN_SIGNATURES.get(saved.get("name", ""))
    if known is not None and fields_of(known) == (inputs, outputs):
        return known
    if inputs and outputs and saved.get("name") in (None, "StringSignature"):
        return dspy.Signature(f"{', '.join(inputs)} -> {', '.join(outputs)}", saved.get("instructions") or None)
    raise ProgramFormatError(
        f"the program was saved with signature {saved.get('name')!r} ({inputs} -> {outputs}), which this "
        "persona-agent does not know: pass it as `signature=` when loading"
    )
