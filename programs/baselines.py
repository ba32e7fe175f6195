"""The paper's comparison set, sharing the task signature and the memory store so comparisons are fair.

- `NonPersonalized`: the task signature alone.
- `ICL`: the user's latest interactions as few-shot demos.
- `RAG`: the top-K most similar past interactions in context.
- `PAG`: the user's profile plus the top-K (profile-augmented generation).
- `MemBank`: MemoryBank-style recall: similarity weighted by an Ebbinghaus forgetting curve, plus profile.
- ReAct and the ablations are `PersonaAgent` configurations: see `make_method`.

Every method takes `as_of` (a strict time cut-off for memory reads) like `PersonaAgent`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dspy
from dspy.signatures.signature import ensure_signature

from persona_agent.core.errors import InvalidInputError
from persona_agent.programs.evidence import EvidenceWeights
from persona_agent.programs.persona import Persona, render_persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.steps import Predict, Steps, run_async, run_sync
from persona_agent.programs.tools import ALL_TOOLS, KNOWLEDGE_TOOLS
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.records import Interaction
from persona_agent.stores.validation import to_utc_naive, validate_k, validate_user_id

HISTORY_NOTE = "Use the user's past interactions shown below to match this user's own preferences and conventions."
PROFILE_NOTE = "Use the user's profile to match their long-term preferences."


def _io_fields(signature: type[dspy.Signature]) -> tuple[str, str]:
    """The (input, output) fields a stored interaction maps onto: query -> first input, response -> first output."""
    return next(iter(signature.input_fields)), next(iter(signature.output_fields))


def format_history(items: Sequence[Interaction], item_chars: int = 300) -> str:
    if not items:
        return "(no past interactions)"
    return "\n".join(
        f"{i}. request: {' '.join(it.query.split())[:item_chars]} -> user's response: {it.response}"
        for i, it in enumerate(items, 1)
    )


class _MemoryMethod(dspy.Module):
    """Shared plumbing: a task signature, one user's store, `as_of`, and one predictor."""

    def __init__(self, signature: type[dspy.Signature] | str, *, store: MemoryStore, user_id: str, k: int = 4) -> None:
        super().__init__()
        self.task_signature = ensure_signature(signature)
        self.store = store
        self.user_id = validate_user_id(user_id)
        self.k = validate_k(k)

    def _before(self, as_of: datetime | float | None) -> datetime | None:
        return None if as_of is None else to_utc_naive(as_of, "as_of")

    def _retrieve(self, inputs: dict[str, Any], as_of: datetime | float | None) -> list[Interaction]:
        query = str(inputs[_io_fields(self.task_signature)[0]])
        if self.store.count(self.user_id) == 0:
            return []
        hits = self.store.search(self.user_id, query, k=self.k, before=self._before(as_of))
        return [h.interaction for h in hits]

    def _profile(self) -> str:
        profile = self.store.get_profile(self.user_id)
        return profile.text if profile is not None else "(no profile yet)"

    def _steps(self, inputs: dict[str, Any], as_of: datetime | float | None) -> Steps:
        raise NotImplementedError

    def forward(self, as_of: datetime | float | None = None, **inputs: Any) -> dspy.Prediction:
        return run_sync(self._steps(inputs, as_of))

    async def aforward(self, as_of: datetime | float | None = None, **inputs: Any) -> dspy.Prediction:
        return await run_async(self._steps(inputs, as_of))


def _with_context_fields(signature: type[dspy.Signature], note: str, *, profile: bool) -> type[dspy.Signature]:
    sig = dspy.Signature({**signature.input_fields}, f"{signature.instructions}\n\n{note}")
    if profile:
        sig = sig.append("user_profile", dspy.InputField(desc="the user's long-term preferences"), type_=str)
    sig = sig.append("user_history", dspy.InputField(desc="the user's relevant past interactions"), type_=str)
    for name, field in signature.output_fields.items():
        sig = sig.append(name, field, type_=field.annotation)
    return sig


class NonPersonalized(dspy.Module):
    """The task signature alone: no memory, no persona."""

    def __init__(self, signature: type[dspy.Signature] | str) -> None:
        super().__init__()
        self.task_signature = ensure_signature(signature)
        self.predict = dspy.Predict(self.task_signature)

    def forward(self, as_of: datetime | float | None = None, **inputs: Any) -> dspy.Prediction:
        return self.predict(**inputs)

    async def aforward(self, as_of: datetime | float | None = None, **inputs: Any) -> dspy.Prediction:
        return await self.predict.acall(**inputs)


class ICL(_MemoryMethod):
    """The user's latest `k` interactions before `as_of` as few-shot demos (passed per call, so the
    module stays shareable between threads)."""

    def __init__(self, signature: type[dspy.Signature] | str, *, store: MemoryStore, user_id: str, k: int = 4) -> None:
        super().__init__(signature, store=store, user_id=user_id, k=k)
        self.predict = dspy.Predict(self.task_signature)

    def _steps(self, inputs: dict[str, Any], as_of: datetime | float | None) -> Steps:
        in_field, out_field = _io_fields(self.task_signature)
        recent = (
            self.store.latest(self.user_id, self.k, before=self._before(as_of))
            if self.store.count(self.user_id)
            else []
        )
        demos = [dspy.Example({in_field: it.query, out_field: it.response}) for it in recent]
        return (yield Predict(self.predict, {**inputs, "demos": demos}))


class RAG(_MemoryMethod):
    """The top-`k` most similar past interactions in context."""

    def __init__(self, signature: type[dspy.Signature] | str, *, store: MemoryStore, user_id: str, k: int = 4) -> None:
        super().__init__(signature, store=store, user_id=user_id, k=k)
        self.predict = dspy.Predict(_with_context_fields(self.task_signature, HISTORY_NOTE, profile=False))

    def _steps(self, inputs: dict[str, Any], as_of: datetime | float | None) -> Steps:
        history = format_history(self._retrieve(inputs, as_of))
        return (yield Predict(self.predict, {**inputs, "user_history": history}))


class PAG(_MemoryMethod):
    """Profile-augmented generation: the user's profile plus the top-`k` past interactions."""

    def __init__(self, signature: type[dspy.Signature] | str, *, store: MemoryStore, user_id: str, k: int = 4) -> None:
        super().__init__(signature, store=store, user_id=user_id, k=k)
        note = f"{PROFILE_NOTE} {HISTORY_NOTE}"
        self.predict = dspy.Predict(_with_context_fields(self.task_signature, note, profile=True))

    def _steps(self, inputs: dict[str, Any], as_of: datetime | float | None) -> Steps:
        history = format_history(self._retrieve(inputs, as_of))
        return (yield Predict(self.predict, {**inputs, "user_profile": self._profile(), "user_history": history}))


class MemBank(_MemoryMethod):
    """MemoryBank-style recall (Zhong et al., 2024): each memory's similarity is weighted by an Ebbinghaus
    retention `exp(-age / strength)` (age in days before `as_of`, or before the newest memory), so old,
    unrehearsed memories fade; the top `k` of `candidates` similar memories are shown with the profile."""

    def __init__(
        self,
        signature: type[dspy.Signature] | str,
        *,
        store: MemoryStore,
        user_id: str,
        k: int = 4,
        candidates: int = 16,
        strength_days: float = 365.0,
    ) -> None:
        super().__init__(signature, store=store, user_id=user_id, k=k)
        if not (isinstance(strength_days, int | float) and strength_days > 0):
            raise InvalidInputError("strength_days", strength_days, "must be a positive number of days")
        self.candidates = validate_k(candidates, "candidates")
        self.strength_days = float(strength_days)
        note = f"{PROFILE_NOTE} {HISTORY_NOTE}"
        self.predict = dspy.Predict(_with_context_fields(self.task_signature, note, profile=True))

    def recall(self, query: str, as_of: datetime | float | None = None) -> list[Interaction]:
        if self.store.count(self.user_id) == 0:
            return []
        before = self._before(as_of)
        hits = self.store.search(self.user_id, query, k=max(self.k, self.candidates), before=before)
        if not hits:
            return []
        now = before or max(h.interaction.created_at for h in hits)

        def retained(hit) -> float:
            age_days = max(0.0, (now - hit.interaction.created_at).total_seconds() / 86_400)
            return hit.score * math.exp(-age_days / self.strength_days)

        return [h.interaction for h in sorted(hits, key=retained, reverse=True)[: self.k]]

    def _steps(self, inputs: dict[str, Any], as_of: datetime | float | None) -> Steps:
        query = str(inputs[_io_fields(self.task_signature)[0]])
        history = format_history(self.recall(query, as_of))
        return (yield Predict(self.predict, {**inputs, "user_profile": self._profile(), "user_history": history}))


METHODS = (
    "non_personalized",
    "icl",
    "rag",
    "pag",
    "membank",
    "react",
    "persona_agent",
    "no_persona",
    "no_memory",
    "no_action",
    "planned",
    "planned_no_persona",
    "planned_no_memory",
)
PLANNED_METHODS = ("planned", "planned_no_persona", "planned_no_memory")


def make_method(
    name: str,
    signature: type[dspy.Signature] | str,
    *,
    store: MemoryStore,
    user_id: str,
    persona: Persona | None = None,
    knowledge: KnowledgeBase | None = None,
    k: int = 4,
    max_iters: int = 3,
    evidence_weights: EvidenceWeights | None = None,
) -> dspy.Module:
    """Build a method of the comparison set by name (see `METHODS`).

    The agentic ones are `PersonaAgent` configurations with the same tools (memory updates off):
    `react` has the generic instruction and no persona; `persona_agent` uses `persona`; the paper's
    ablations drop one part each: `no_persona` (the persona's agent instructions, no user profile),
    `no_memory` (no memory tools), `no_action` (no tool loop). "Without alignment" is `persona_agent`
    with the initial persona.
    """
    if name == "non_personalized":
        return NonPersonalized(signature)
    simple = {"icl": ICL, "rag": RAG, "pag": PAG, "membank": MemBank}
    if name in simple:
        return simple[name](signature, store=store, user_id=user_id, k=k)
    if name not in METHODS:
        raise InvalidInputError("method", name, f"choose from {list(METHODS)}")
    if name in PLANNED_METHODS:
        return _planned(name, signature, store=store, user_id=user_id, persona=persona, weights=evidence_weights)
    if name in ("persona_agent", "no_memory", "no_action") and persona is None:
        raise InvalidInputError("persona", None, f"method {name!r} needs the user's persona")
    common: dict[str, Any] = {
        "user_id": user_id,
        "store": store,
        "knowledge": knowledge,
        "max_iters": max_iters,
        "allow_updates": False,
    }
    if name == "react":
        return PersonaAgent(signature, persona=None, **common)
    if name == "no_persona":
        return PersonaAgent(signature, persona=render_persona(None), **common)
    if name == "no_memory":
        return PersonaAgent(signature, persona=persona, tools=KNOWLEDGE_TOOLS, **common)
    if name == "no_action":
        return PersonaAgent(signature, persona=persona, use_actions=False, **common)
    return PersonaAgent(signature, persona=persona, tools=ALL_TOOLS, **common)


def _planned(
    name: str,
    signature: type[dspy.Signature] | str,
    *,
    store: MemoryStore,
    user_id: str,
    persona: Persona | None,
    weights: EvidenceWeights | None,
) -> PersonaAgent:
    """PersonaAgent in planned mode (one answer call, memory as demos): with `persona` (`planned`), with the
    persona's agent instructions only (`planned_no_persona`), or without memory (`planned_no_memory`: no
    demos, and the model's evidence alone)."""
    if name != "planned_no_persona" and persona is None:
        raise InvalidInputError("persona", None, f"method {name!r} needs the user's persona")
    common: dict[str, Any] = {"user_id": user_id, "store": store, "allow_updates": False, "mode": "planned"}
    if name == "planned_no_persona":
        return PersonaAgent(signature, persona=render_persona(None), evidence_weights=weights, **common)
    if name == "planned_no_memory":
        return PersonaAgent(signature, persona=persona, tools=(), **common)
    return PersonaAgent(signature, persona=persona, evidence_weights=weights, **common)
