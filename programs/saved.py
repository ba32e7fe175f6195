"""Saved programs: a `PersonaAgent` as one JSON document, and the fast way back to a ready agent.

A document is DSPy's JSON state plus what is needed to rebuild the agent around it and to audit it:

    {"format": "persona-agent/program", "schema_version": 2,
     "dependency_versions": {"python", "dspy", "persona_agent"},
     "program": {"signature": {"name", "inputs", "outputs", "instructions"}, "tools", "max_iters",
                 "use_actions", "allow_updates", "task"},
     "persona": {...Persona.to_dict()...}, "state": {...DSPy state, no LM...}, "scores": {...}, "usage": {...}}

No pickle, and no LM: each predictor's `lm` is dropped on save and never restored on load, so no model
setting or API key is ever written; the program answers with the LM configured where it runs.

Schema 1 is what `PersonaAgent.save(path)` writes (DSPy's state file with our `persona_agent` entry):
it is upgraded on load, the signature recognised from the saved fields. A newer schema, or a signature
we cannot rebuild, fails with `ProgramFormatError` saying what to do.
"""

from __future__ import annotations

import copy
import json
import platform
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import dspy

from persona_agent.core.errors import InvalidInputError, ProgramFormatError
from persona_agent.programs.evidence import EvidenceWeights
from persona_agent.programs.persona import Persona
from persona_agent.programs.persona_agent import STATE_KEY, PersonaAgent
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

FORMAT = "persona-agent/program"
SCHEMA_VERSION = 2
KNOWN_SIGNATURES: dict[str, type[dspy.Signature]] = {
    s.__name__: s
    for s in (PersonalizedRequest, CategorizeArticle, TagMovie, RateReview, ChooseCitation, GenerateHeadline)
}


def package_version() -> str:
    try:
        return metadata.version("persona-agent")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


def _fields(signature: type[dspy.Signature]) -> tuple[list[str], list[str]]:
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
        shape = (sig.__module__, sig.__name__, *_fields(sig), sig.instructions)
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
        if _fields(given) != (inputs, outputs):
            raise ProgramFormatError(
                f"the given signature {given.__name__} has fields {_fields(given)}; the program was saved with "
                f"{(inputs, outputs)}"
            )
        return given
    known = KNOWN_SIGNATURES.get(saved.get("name", ""))
    if known is not None and _fields(known) == (inputs, outputs):
        return known
    if inputs and outputs and saved.get("name") in (None, "StringSignature"):
        return dspy.Signature(f"{', '.join(inputs)} -> {', '.join(outputs)}", saved.get("instructions") or None)
    raise ProgramFormatError(
        f"the program was saved with signature {saved.get('name')!r} ({inputs} -> {outputs}), which this "
        "persona-agent does not know: pass it as `signature=` when loading"
    )


def _clean_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """DSPy state without our metadata, DSPy's own metadata, or any predictor's LM."""
    cleaned = {}
    for name, value in state.items():
        if name in (STATE_KEY, "metadata"):
            continue
        if isinstance(value, Mapping):
            value = {**value, "lm": None}
        cleaned[name] = value
    return cleaned


def program_document(
    agent: PersonaAgent,
    *,
    persona: Persona | None = None,
    scores: Mapping[str, Any] | None = None,
    usage: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The saved form of `agent` (its persona, or `persona` when the registry numbered it differently)."""
    persona = persona if persona is not None else agent.persona
    if persona is not None and persona.user_id != agent.user_id:
        raise InvalidInputError("persona.user_id", persona.user_id, f"the agent is for {agent.user_id!r}")
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "dependency_versions": {
            "python": platform.python_version(),
            "dspy": dspy.__version__,
            "persona_agent": package_version(),
        },
        "user_id": agent.user_id,
        "program": ProgramSpec.of(agent).to_dict(),
        "persona": persona.to_dict() if persona is not None else None,
        "state": _clean_state(agent.dump_state()),
        "scores": dict(scores or {}),
        "usage": dict(usage or {}),
    }


def _signature_from_v1(state: Mapping[str, Any]) -> dict[str, Any]:
    """Recognise the task of a schema-1 file from its answer predictor's field prefixes."""
    try:
        saved = {f["prefix"] for f in state["respond"]["signature"]["fields"]}
    except (KeyError, TypeError):
        raise ProgramFormatError("the schema-1 program has no 'respond' predictor with fields") from None
    for sig in KNOWN_SIGNATURES.values():
        prefixes = {f.json_schema_extra["prefix"] for f in sig.fields.values()} | {"Trajectory:"}
        if prefixes == saved:
            inputs, outputs = _fields(sig)
            return {"name": sig.__name__, "inputs": inputs, "outputs": outputs, "instructions": sig.instructions}
    return {"name": None, "inputs": [], "outputs": [], "fields": sorted(saved)}


def upgrade_document(data: Mapping[str, Any]) -> dict[str, Any]:
    """Bring a saved program of any schema this version knows to the current one; refuse anything else."""
    if not isinstance(data, Mapping):
        raise ProgramFormatError(f"a saved program is a JSON object, not {type(data).__name__}")
    if data.get("format") == FORMAT:
        version = data.get("schema_version")
        if version == SCHEMA_VERSION:
            return dict(data)
        if isinstance(version, int) and version > SCHEMA_VERSION:
            raise ProgramFormatError(
                f"this program was saved with schema {version} by a newer persona-agent "
                f"({data.get('dependency_versions', {}).get('persona_agent', '?')}); this one reads schemas up to "
                f"{SCHEMA_VERSION}: upgrade persona-agent to load it"
            )
        raise ProgramFormatError(f"unknown schema_version {version!r} of a {FORMAT} document")
    meta = data.get(STATE_KEY)
    if isinstance(meta, Mapping) and "respond" in data:  # schema 1: `PersonaAgent.save()`'s DSPy state file
        signature = _signature_from_v1(data)
        state = _clean_state(data)
        tools = list(ALL_TOOLS) if "react" in state else []
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "upgraded_from": 1,
            "dependency_versions": dict(data.get("metadata", {}).get("dependency_versions", {})),
            "user_id": meta.get("user_id"),
            "program": {"signature": signature, "tools": tools, "max_iters": 3, "use_actions": bool(tools)},
            "persona": meta.get("persona"),
            "state": state,
            "scores": {},
            "usage": {},
        }
    raise ProgramFormatError(
        "not a saved PersonaAgent program: expected a persona-agent/program document or a PersonaAgent.save() file"
    )


def read_document(path: str | Path) -> dict[str, Any]:
    """A saved program from a JSON file, upgraded to the current schema."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInputError("path", str(path), "no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProgramFormatError(f"{path} is not a JSON program file ({exc})") from None
    return upgrade_document(data)


def write_document(document: Mapping[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


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
        spec = ProgramSpec.from_dict(document.get("program") or {}, signature)
        saved = document.get("persona")
        if persona is None and saved is not None:
            persona = Persona.from_dict(saved)
        user = user_id or (persona.user_id if persona is not None else document.get("user_id"))
        if not user:
            raise ProgramFormatError("the saved program names no user: pass user_id")
        if persona is not None and persona.user_id != user:
            persona = Persona(**{**persona.to_dict(), "user_id": user, "created_at": persona.created_at})
        template, shapes = self.template(spec)
        saved_state = document.get("state") or {}
        state = _clean_state(saved_state)
        predictors = dict(template.named_predictors())
        if "answer" in predictors and "answer" not in state:  # saved before planned mode had its predictor
            state["answer"] = _clean_state({"answer": predictors["answer"].dump_state()})["answer"]
        if set(state) != set(predictors):
            raise ProgramFormatError(
                f"the saved state has predictors {sorted(state)}; this program has {sorted(predictors)}"
            )
        agent = template.rebind(user, persona)
        weights = (saved_state.get(STATE_KEY) or {}).get("evidence_weights")
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
    """A ready agent from a saved JSON file (`program_document` output or a schema-1 `PersonaAgent.save()` file)."""
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
    "program_document",
    "read_document",
    "resolve_signature",
    "upgrade_document",
    "write_document",
)
