"""Saved programs back to ready agents, fast: `ProgramFactory` and `load_program_file`.

The document format (a DSPy state file with our `persona_agent` entry) is `persona_agent.programs.documents`;
the program spec (signature, tools, loop settings) is `persona_agent.programs.spec`. Both are re-exported here.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy

from persona_agent.core.errors import ProgramFormatError
from persona_agent.programs.documents import (
    FORMAT,
    SCHEMA_VERSION,
    clean_state,
    entry,
    owner_of,
    program_document,
    read_document,
    upgrade_document,
    with_program,
    write_document,
)
from persona_agent.programs.evidence import EvidenceWeights
from persona_agent.programs.persona import Persona
from persona_agent.programs.persona_agent import STATE_KEY, PersonaAgent
from persona_agent.programs.spec import KNOWN_SIGNATURES, ProgramSpec, resolve_signature
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore


class ProgramFactory:
    """Builds agents from documents, fast: one template agent per program spec (built once, which costs tens of
    milliseconds of signature classes), copied and re-bound per user, with the saved state applied in place
    when its fields match the template (the common case: alignment changes only the persona).

    Bound to one store and knowledge base; thread-safe.
    """

    def __init__(
        self, *, store: MemoryStore | None = None, knowledge: KnowledgeBase | None = None, max_templates: int = 64
    ) -> None:
        self.store = store
        self.knowledge = knowledge
        self._templates: OrderedDict[str, tuple[PersonaAgent, dict[str, Any]]] = OrderedDict()
        self._max = max_templates
        self._lock = threading.Lock()

    def template(self, spec: ProgramSpec) -> tuple[PersonaAgent, dict[str, Any]]:
        """The spec's template agent and each predictor's saved field texts (to recognise a matching state)."""
        with self._lock:
            entry = self._templates.get(spec._key)
            if entry is not None:
                self._templates.move_to_end(spec._key)
                return entry
        agent = spec.build("template", store=self.store, knowledge=self.knowledge)
        shapes = {name: p.signature.dump_state()["fields"] for name, p in agent.named_predictors()}
        with self._lock:
            entry = self._templates.setdefault(spec._key, (agent, shapes))
            while len(self._templates) > self._max:
                self._templates.popitem(last=False)
        return entry

    def build(
        self,
        document: Mapping[str, Any],
        *,
        user_id: str | None = None,
        persona: Persona | None = None,
        signature: type[dspy.Signature] | None = None,
    ) -> PersonaAgent:
        """A ready agent from a document (any known schema). `user_id`/`persona` override the saved ones."""
        document = upgrade_document(document)
        meta = entry(document)
        spec = ProgramSpec.from_dict(meta.get("program") or {}, signature)
        saved = meta.get("persona")
        if persona is None and saved is not None:
            persona = Persona.from_dict(saved)
        user = user_id or (persona.user_id if persona is not None else meta.get("user_id"))
        if not user:
            raise ProgramFormatError("the saved program names no user: pass user_id")
        if persona is not None and persona.user_id != user:
            persona = Persona(**{**persona.to_dict(), "user_id": user, "created_at": persona.created_at})
        template, shapes = self.template(spec)
        state = clean_state(document)
        predictors = dict(template.named_predictors())
        if "answer" in predictors and "answer" not in state:  # saved before planned mode had its predictor
            state["answer"] = clean_state({"answer": predictors["answer"].dump_state()})["answer"]
        if set(state) != set(predictors):
            raise ProgramFormatError(
                f"the saved state has predictors {sorted(state)}; this program has {sorted(predictors)}"
            )
        agent = template.rebind(user, persona)
        weights = meta.get("evidence_weights")
        if weights:
            agent.evidence_weights = EvidenceWeights.from_dict(weights)
        if all(state[n].get("signature", {}).get("fields") == shapes[n] and "fields" not in state[n] for n in state):
            for name, predictor in agent.named_predictors():
                saved = state[name]
                predictor.demos = [dspy.Example(**d) if isinstance(d, Mapping) else d for d in saved.get("demos", [])]
                predictor.traces = copy.deepcopy(saved.get("traces", []))
                predictor.train = copy.deepcopy(saved.get("train", []))
        else:  # field texts were optimised too: DSPy's own (slower) load, with the persona on top
            _load_dspy_state(agent, state, persona)
        return agent

    def for_user(self, spec: ProgramSpec, user_id: str, persona: Persona | None) -> PersonaAgent:
        """A fresh agent of `spec` for a user (no saved state): e.g. a new user's initial persona."""
        return self.template(spec)[0].rebind(user_id, persona)


def _load_dspy_state(agent: PersonaAgent, state: Mapping[str, Any], persona: Persona | None) -> None:
    """DSPy's own state loading, on a trial copy first so a state that does not fit changes nothing."""
    full = {**state, STATE_KEY: {"user_id": agent.user_id, "persona": persona.to_dict() if persona else None}}
    try:
        agent.deepcopy().load_state(dict(full))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProgramFormatError(f"the saved state does not fit this program ({exc!r})") from None
    agent.load_state(dict(full))


def load_program_file(
    path: str | Path,
    *,
    user_id: str | None = None,
    store: MemoryStore | None = None,
    knowledge: KnowledgeBase | None = None,
    signature: type[dspy.Signature] | None = None,
) -> PersonaAgent:
    """A ready agent from a saved JSON file (`program_document` output, an older schema, or a
    `PersonaAgent.save()` file)."""
    return ProgramFactory(store=store, knowledge=knowledge).build(
        read_document(path), user_id=user_id, signature=signature
    )


__all__: Sequence[str] = (
    "FORMAT",
    "KNOWN_SIGNATURES",
    "SCHEMA_VERSION",
    "ProgramFactory",
    "ProgramSpec",
    "load_program_file",
    "owner_of",
    "program_document",
    "read_document",
    "resolve_signature",
    "upgrade_document",
    "with_program",
    "write_document",
)
