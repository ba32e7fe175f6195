"""The typed records of the persona registry (`stores.personas`): a persona version, the live pointer, a change of
it, and how a stored row becomes one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from persona_agent.core.errors import InvalidInputError

VersionRef = int | str | None
# The sources of `persona_agent.programs.Persona` (stores sit beneath programs, so the list is repeated here).
PersonaSource = Literal["init", "aligned", "manual", "rollback"]
SOURCES: tuple[str, ...] = ("init", "aligned", "manual", "rollback")
LIVE_ALIASES = ("live", "champion")
LATEST = "latest"
COLUMNS = "user_id, version, text, parent, source, created_at, strategy, scores, usage, mlflow_run_id"


class PersonaRecord(BaseModel):
    """One stored persona version (its saved program, if any, is fetched separately: it can be large)."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    version: int
    text: str
    parent: int | None
    source: PersonaSource
    created_at: datetime
    strategy: str | None = None
    scores: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, Any] = Field(default_factory=dict)
    mlflow_run_id: str | None = None

    def persona_dict(self) -> dict[str, Any]:
        """The fields of `persona_agent.programs.Persona` (`Persona.from_dict` reads this), as JSON data."""
        return {
            "user_id": self.user_id,
            "text": self.text,
            "version": self.version,
            "parent": self.parent,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
        }


class LiveState(BaseModel):
    """Which version is live for a user, and the revision to pass back for an optimistic-locked change."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    version: int
    revision: int
    updated_at: datetime


class PersonaEvent(BaseModel):
    """One change of the live pointer."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    revision: int
    at: datetime
    action: Literal["promote", "rollback"]
    from_version: int | None
    to_version: int


def record_from_row(row: tuple) -> PersonaRecord:
    """A row of `COLUMNS` as a `PersonaRecord`."""
    user_id, version, text, parent, source, created_at, strategy, scores, usage, run_id = row
    return PersonaRecord(
        user_id=user_id,
        version=version,
        text=text,
        parent=parent,
        source=source,
        created_at=created_at,
        strategy=strategy,
        scores=json.loads(scores),
        usage=json.loads(usage),
        mlflow_run_id=run_id,
    )


def json_field(value: Mapping[str, Any] | None, field: str) -> str:
    """A mapping as the JSON text a column keeps ('{}' for None); `InvalidInputError` naming `field` if it is not one."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidInputError(field, value, "must be a mapping")
    try:
        return json.dumps(dict(value), ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field, value, f"is not JSON-serialisable ({exc})") from None
