"""Typed records the memory store returns and accepts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NewInteraction(BaseModel):
    """One interaction to store: what the user asked (`query`) and the response they wanted.

    `created_at` defaults to the time of the `add` call; naive datetimes are taken as UTC.
    """

    model_config = ConfigDict(extra="forbid")

    query: str
    response: str = ""
    task: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | float | None = None


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
