"""Saved programs as documents: a `PersonaAgent` as one JSON file that DSPy itself can load.

A document (schema 3) is a DSPy state file, what `dspy.Module.save("program.json")` writes, with everything
we need to rebuild and audit the agent in its `persona_agent` entry:

    {"react": {...}, "respond": {...}, "answer": {...},      # DSPy's per-predictor state, no LM
     "metadata": {"dependency_versions": {"python", "dspy", "cloudpickle"}},    # DSPy's own
     "persona_agent": {"format": "persona-agent/program", "schema_version": 3, "user_id": ...,
                       "persona": {...Persona.to_dict()...}, "mode": ..., "evidence_weights": {...},
                       "program": {"signature": {"name", "inputs", "outputs", "instructions"}, "tools",
                                   "max_iters", "use_actions", "allow_updates", "task", "mode", "k"},
                       "scores": {...}, "usage": {...}, "dependency_versions": {"persona_agent": ...}}}

So `PersonaAgent(user_id=...).load("program.json")` (DSPy's `Module.load`) works on a fresh agent of the same
task, and `persona_agent.load_program` rebuilds any task from the `program` entry.

No pickle, and no LM: each predictor's `lm` is dropped on save and never restored on load, so no model
setting or API key is ever written; the program answers with the LM configured where it runs.

Older documents are upgraded on read: schema 2 (our entries at the top, DSPy's state under `state`) and
schema 1 (what `PersonaAgent.save(path)` writes: DSPy's state file with only `user_id` and `persona` in our
entry, the signature recognised from the saved fields). A newer schema fails with `ProgramFormatError`
saying what to do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from dspy.utils.saving import get_dependency_versions

from persona_agent.core.errors import InvalidInputError, ProgramFormatError
from persona_agent.programs.persona import Persona
from persona_agent.programs.persona_agent import STATE_KEY, PersonaAgent
from persona_agent.programs.spec import KNOWN_SIGNATURES, ProgramSpec, fields_of
from persona_agent.programs.tools import ALL_TOOLS

FORMAT = "persona-agent/program"
SCHEMA_VERSION = 3
DISTRIBUTION = "dspy-persona"
"""The name the package is installed under (its import name is `persona_agent`)."""
_DSPY_META = "metadata"


def package_version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # a bare checkout, or installed under an older name
        return "unknown"


def clean_state(state: Mapping[str, Any]) -> dict[str, Any]:
    """The per-predictor DSPy state of a document: without our entry, DSPy's metadata, or any predictor's LM."""
    cleaned = {}
    for name, value in state.items():
        if name in (STATE_KEY, _DSPY_META):
            continue
        if isinstance(value, Mapping):
            value = {**value, "lm": None}
        cleaned[name] = value
    return cleaned


def entry(document: Mapping[str, Any]) -> dict[str, Any]:
    """Our entry of a current document: user, persona, program spec, scores, usage."""
    return dict(document.get(STATE_KEY) or {})


def owner_of(document: Mapping[str, Any]) -> str | None:
    """The user a document (any known schema) was saved for."""
    meta = entry(upgrade_document(document))
    return (meta.get("persona") or {}).get("user_id") or meta.get("user_id")


def with_program(document: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of a document (any known schema, upgraded) with some `program` settings changed (e.g.
    `allow_updates=False`)."""
    document = upgrade_document(document)
    meta = entry(document)
    return {**document, STATE_KEY: {**meta, "program": {**(meta.get("program") or {}), **changes}}}


def _document(
    state: Mapping[str, Any],
    meta: Mapping[str, Any],
    dspy_versions: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        **clean_state(state),
        _DSPY_META: {"dependency_versions": dict(dspy_versions)},
        STATE_KEY: {"format": FORMAT, "schema_version": SCHEMA_VERSION, **meta},
    }


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
    state = agent.dump_state()
    meta = {
        **state[STATE_KEY],  # what DSPy's `load` gives back to a fresh agent: mode and evidence weights too
        "user_id": agent.user_id,
        "persona": persona.to_dict() if persona is not None else None,
        "program": ProgramSpec.of(agent).to_dict(),
        "scores": dict(scores or {}),
        "usage": dict(usage or {}),
        "dependency_versions": {"persona_agent": package_version()},
    }
    return _document(state, meta, get_dependency_versions())


def _signature_from_v1(state: Mapping[str, Any]) -> dict[str, Any]:
    """Recognise the task of a schema-1 file from its answer predictor's field prefixes."""
    try:
        saved = {f["prefix"] for f in state["respond"]["signature"]["fields"]}
    except (KeyError, TypeError):
        raise ProgramFormatError("the schema-1 program has no 'respond' predictor with fields") from None
    for sig in KNOWN_SIGNATURES.values():
        prefixes = {f.json_schema_extra["prefix"] for f in sig.fields.values()} | {"Trajectory:"}
        if prefixes == saved:
            inputs, outputs = fields_of(sig)
            return {"name": sig.__name__, "inputs": inputs, "outputs": outputs, "instructions": sig.instructions}
    return {"name": None, "inputs": [], "outputs": [], "fields": sorted(saved)}


def _dspy_versions(versions: Mapping[str, Any]) -> dict[str, Any]:
    """The dependency versions DSPy's loader compares (it looks up each saved key in its own list)."""
    known = get_dependency_versions()
    return {k: ".".join(str(v).split(".")[:2]) if k == "python" else v for k, v in versions.items() if k in known}


def _agent_settings(saved: Any) -> dict[str, Any]:
    """The answering settings an older document kept in the agent's own state entry (mode, evidence weights)."""
    saved = saved if isinstance(saved, Mapping) else {}
    return {key: saved[key] for key in ("mode", "evidence_weights") if saved.get(key) is not None}


def _from_v2(data: Mapping[str, Any]) -> dict[str, Any]:
    versions = dict(data.get("dependency_versions") or {})
    meta = {
        **_agent_settings((data.get("state") or {}).get(STATE_KEY)),
        "upgraded_from": 2,
        "user_id": data.get("user_id"),
        "persona": data.get("persona"),
        "program": data.get("program"),
        "scores": dict(data.get("scores") or {}),
        "usage": dict(data.get("usage") or {}),
        "dependency_versions": {"persona_agent": versions.get("persona_agent", "unknown")},
    }
    return _document(data.get("state") or {}, meta, _dspy_versions(versions))


def _from_v1(data: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    state = clean_state(data)
    tools = list(ALL_TOOLS) if "react" in state else []
    program = {"signature": _signature_from_v1(data), "tools": tools, "max_iters": 3, "use_actions": bool(tools)}
    program["mode"] = meta.get("mode", "auto")
    ours = {
        **_agent_settings(meta),
        "upgraded_from": 1,
        "user_id": meta.get("user_id"),
        "persona": meta.get("persona"),
        "program": program,
        "scores": {},
        "usage": {},
        "dependency_versions": {},
    }
    versions = dict((data.get(_DSPY_META) or {}).get("dependency_versions") or {})
    return _document(state, ours, _dspy_versions(versions))


def upgrade_document(data: Mapping[str, Any]) -> dict[str, Any]:
    """Bring a saved program of any schema this version knows to the current one; refuse anything else."""
    if not isinstance(data, Mapping):
        raise ProgramFormatError(f"a saved program is a JSON object, not {type(data).__name__}")
    meta = data.get(STATE_KEY)
    if isinstance(meta, Mapping) and meta.get("format") == FORMAT:
        version = meta.get("schema_version")
        if version == SCHEMA_VERSION:
            return dict(data)
        _refuse(version, meta)
    if data.get("format") == FORMAT:
        if data.get("schema_version") == 2:
            return _from_v2(data)
        _refuse(data.get("schema_version"), data)
    if isinstance(meta, Mapping) and "respond" in data:  # schema 1: `PersonaAgent.save()`'s DSPy state file
        return _from_v1(data, meta)
    raise ProgramFormatError(
        "not a saved PersonaAgent program: expected a persona-agent/program document or a PersonaAgent.save() file"
    )


def _refuse(version: Any, meta: Mapping[str, Any]) -> None:
    if isinstance(version, int) and version > SCHEMA_VERSION:
        saved_by = (meta.get("dependency_versions") or {}).get("persona_agent", "?")
        raise ProgramFormatError(
            f"this program was saved with schema {version} by a newer persona-agent ({saved_by}); this one reads "
            f"schemas up to {SCHEMA_VERSION}: upgrade it (pip install -U {DISTRIBUTION}) to load it"
        )
    raise ProgramFormatError(f"unknown schema_version {version!r} of a {FORMAT} document")


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


__all__ = [
    "DISTRIBUTION",
    "FORMAT",
    "SCHEMA_VERSION",
    "clean_state",
    "entry",
    "owner_of",
    "program_document",
    "read_document",
    "upgrade_document",
    "with_program",
    "write_document",
]
