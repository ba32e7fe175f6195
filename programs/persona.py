"""The persona: a per-user system prompt made of a stable user profile and explicit agent instructions.

The paper's persona has exactly these two parts (its example: a film-analysis user who "prefers
concise, direct answers", plus "When using tools, always: think step by step; use at least TWO
tools; ..."). It is the optimizable instruction of every predictor of a user's agent: the task's own
instructions stay beneath it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from persona_agent.core.errors import InvalidInputError
from persona_agent.stores.records import Profile
from persona_agent.stores.validation import validate_user_id

PersonaSource = Literal["init", "aligned", "manual", "rollback"]

PROFILE_HEADING = "## User profile"
INSTRUCTIONS_HEADING = "## Agent instructions"
NO_PROFILE = "Nothing is known about this user yet; learn their preferences from their past interactions."

DEFAULT_AGENT_INSTRUCTIONS = """\
You act for this one user. When using tools, always:
- think step by step about what this user, not an average user, would want;
- call search_memory with the request itself to see how the user handled similar past requests;
- call recall_profile when the user's long-term preferences matter;
- prefer the labels, ratings and wording this user gave in similar past cases over generic ones;
- finish as soon as the evidence is clear, then answer in exactly the required format."""

GENERIC_INSTRUCTIONS = """\
Answer the request accurately. Use the tools when they help, then answer in exactly the required format."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Persona:
    """One version of one user's persona. Versions count from 0 (the initial persona)."""

    user_id: str
    text: str
    version: int = 0
    parent: int | None = None
    source: PersonaSource = "init"
    created_at: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        validate_user_id(self.user_id)
        if not isinstance(self.text, str) or not self.text.strip():
            raise InvalidInputError("text", self.text, "a persona must be non-empty text")
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 0:
            raise InvalidInputError("version", self.version, "must be a non-negative integer")
        if self.parent is not None and (not isinstance(self.parent, int) or self.parent >= self.version):
            raise InvalidInputError("parent", self.parent, "must be an earlier version")
        if self.source not in get_args(PersonaSource):
            raise InvalidInputError("source", self.source, f"must be one of {get_args(PersonaSource)}")

    def revise(self, text: str, *, source: PersonaSource = "aligned") -> Persona:
        """The next version: new text, this version as parent."""
        return Persona(user_id=self.user_id, version=self.version + 1, text=text, parent=self.version, source=source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the timestamp as ISO text)."""
        return {**asdict(self), "created_at": self.created_at.isoformat()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Persona:
        if not isinstance(data, Mapping):
            raise InvalidInputError("persona", data, "must be a mapping of persona fields")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidInputError("persona", sorted(unknown), "has unknown fields")
        created = data.get("created_at")
        try:
            created_at = datetime.fromisoformat(created) if isinstance(created, str) else created or _now()
        except ValueError:
            raise InvalidInputError("persona.created_at", created, "is not an ISO timestamp") from None
        return cls(**{**data, "created_at": created_at})


def render_persona(profile: str | None, instructions: str = DEFAULT_AGENT_INSTRUCTIONS) -> str:
    """The paper's two-part persona text."""
    profile_text = (profile or "").strip() or NO_PROFILE
    return f"{PROFILE_HEADING}\n{profile_text}\n\n{INSTRUCTIONS_HEADING}\n{instructions.strip()}"


def init_persona(user_id: str, profile: Profile | str | None = None) -> Persona:
    """Version 0 of a user's persona, from their semantic-memory profile (or an empty one)."""
    text = profile.text if isinstance(profile, Profile) else profile
    return Persona(user_id=user_id, version=0, text=render_persona(text), source="init")


def persona_sections(text: str) -> dict[str, str]:
    """Split a persona into its headed sections (heading without '## ' -> body); text before any
    heading goes under ''. Used to check an update kept the profile + instructions structure."""
    sections: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        else:
            sections[current].append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items() if k or "\n".join(v).strip()}
