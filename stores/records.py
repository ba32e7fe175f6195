"""Typed records the memory store returns and accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic would take true as 1.0 Unix seconds
        raise ValueError("must be a datetime or Unix seconds, not a boolean")
    return value


TimeValue = Annotated[datetime | float, BeforeValidator(_not_bool)]
"""A time as given: a datetime (ISO text in JSON) or Unix seconds; checked by `validation.to_utc_naive`."""


class NewInteraction(BaseModel):
    """One interaction to store: what the user asked (`query`) and the response they wanted.

    `created_at` defaults to the time of the `add` call; naive datetimes are taken as UTC. The row's identity is
    (user, `created_at` as given, query, response): an interaction given without a time is identified by its
    content alone, so adding it again is skipped as a duplicate.
    """

    model_config = ConfigDict(extra="forbid")

    query: str
    response: str = ""
    task: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: TimeValue | None = None


class IngestReport(BaseModel):
    """What one `MemoryStore.ingest` (one transaction) did: `ids` holds one id per record in order, the new
    row's or, for a duplicate (of a stored row or of an earlier record of the call), the row it repeats."""

    model_config = ConfigDict(frozen=True)

    ids: tuple[str, ...]
    added: int
    skipped: int


class Interaction(BaseModel):
    """A stored episodic-memory row (the paper's (query, ground-truth response, metadata, time) tuple)."""

    model_config = ConfigDict(frozen=True)

    id: str
    user_id: str
    created_at: datetime
    task: str | None
    query: str
    response: str
    metadata: dict[str, Any]


class SearchHit(BaseModel):
    """One search result; `score` is cosine similarity (higher is more similar), hits come in rank order."""

    model_config = ConfigDict(frozen=True)

    interaction: Interaction
    score: float
    rank: int


class Profile(BaseModel):
    """A version of a user's semantic memory: a stable profile summarised from episodic rows."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    version: int
    text: str
    created_at: datetime
    source_ids: tuple[str, ...]


class ForgetReport(BaseModel):
    """What `forget` removed for one user."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    interactions: int = 0
    vectors: int = 0
    profiles: int = 0
    extra: dict[str, int] = Field(default_factory=dict)
    erased_by: datetime | None = None
    """When the deleted rows' bytes will have left the database file (UTC): the pending compaction's due time,
    or when it ran. None for an in-memory store."""

    @property
    def total(self) -> int:
        return self.interactions + self.profiles + sum(self.extra.values())
