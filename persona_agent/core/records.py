"""Typed per-user evaluation records, whatever file or public data set they came from.

A user is one time-ordered timeline: `history` (older) then `queries` (the latest items). Time is the
integer `order`; equal orders mean "same time" (a day-resolution date shared by two reviews, say), and
an item is only ever shown to a query when its order is *strictly* smaller. That single rule is what
keeps retrieval and alignment from seeing the answer or anything written at the same time as it.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from persona_agent.core.errors import InvalidInputError


class Item(BaseModel):
    """One interaction: what the user was given (`input`), what they answered (`output`), and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    input: str
    output: str
    order: int = Field(ge=0, description="position on the user's timeline; equal values are simultaneous")
    timestamp: datetime | None = None
    fields: dict[str, str] = Field(default_factory=dict, description="source fields kept for export and inspection")

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Naive datetimes are taken as UTC so that every timestamp compares with every other.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    def __hash__(self) -> int:
        # `fields` is a dict, so pydantic's frozen hash would fail; these parts identify an item.
        return hash((self.id, self.order, self.input, self.output))


def user_key(task: str, user_id: str) -> str:
    """The name a user goes by in committed results: a digest of (task, user id), not the id itself.

    Dataset user ids (bylines, reviewer ids) are part of the data, which is never committed; a results log
    still needs a stable per-user key to score and resume. Anyone holding the data can recompute the key,
    so it hides nothing from them; it keeps the ids out of the repository. The task is hashed in so that
    one person's keys do not link across tasks.
    """
    return "u-" + hashlib.sha256(f"{task}\x00{user_id}".encode()).hexdigest()[:12]


class EvalUser(BaseModel):
    """One user's timeline for one task, split into history and the latest `queries`.

    Methods must take what they show for a query from `profile_before(query)`, never from `history`
    directly: `history` can hold an item simultaneous with a query (same day), which must stay hidden.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_id: str = Field(min_length=1)
    task: str
    history: tuple[Item, ...]
    queries: tuple[Item, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _well_ordered(self) -> EvalUser:
        timeline = self.history + self.queries
        ids = [item.id for item in timeline]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise InvalidInputError("items.id", dupes[:5], f"user {self.user_id!r} has duplicate item ids")
        for before, after in itertools.pairwise(timeline):
            if after.order < before.order:
                raise InvalidInputError(
                    "items.order", (before.id, after.id), f"user {self.user_id!r}: timeline is not time-ordered"
                )
            if before.timestamp is not None and after.timestamp is not None:
                if after.timestamp < before.timestamp or (after.order > before.order) != (
                    after.timestamp > before.timestamp
                ):
                    raise InvalidInputError(
                        "items.timestamp",
                        (before.id, after.id),
                        f"user {self.user_id!r}: order and timestamp disagree",
                    )
        return self

    @property
    def key(self) -> str:
        """This user's name in results logs (`user_key`)."""
        return user_key(self.task, self.user_id)

    @property
    def timeline(self) -> tuple[Item, ...]:
        """Every item, oldest first."""
        return self.history + self.queries

    @property
    def n_items(self) -> int:
        return len(self.history) + len(self.queries)

    def item(self, item_id: str) -> Item:
        """The item with this id; raises `InvalidInputError` if the user has none."""
        for candidate in self.timeline:
            if candidate.id == item_id:
                return candidate
        raise InvalidInputError("item_id", item_id, f"user {self.user_id!r} has no such item")

    def _resolve(self, query: Item | str) -> Item:
        item = self.item(query.id if isinstance(query, Item) else query)
        if isinstance(query, Item) and item != query:
            raise InvalidInputError("query", query.id, f"is not the item of user {self.user_id!r} with this id")
        return item

    def profile_before(self, query: Item | str) -> tuple[Item, ...]:
        """Everything strictly earlier than `query`: the only items a method may retrieve from for it."""
        target = self._resolve(query)
        return tuple(item for item in self.timeline if item.order < target.order)

    def alignment_batch(self, query: Item | str, n: int = 3) -> tuple[Item, ...]:
        """The `n` interactions just before `query` (oldest first): what test-time alignment trains on."""
        if n < 0:
            raise InvalidInputError("n", n, "must be >= 0")
        profile = self.profile_before(query)
        return profile[len(profile) - n :] if n else ()

    def first_alignment_batch(self, n: int = 3) -> tuple[Item, ...]:
        """The alignment batch of the first query: align once per user, then answer every query."""
        return self.alignment_batch(self.queries[0], n)


THRESHOLDS: tuple[int, ...] = (5, 10, 20, 50, 100)


class BuildReport(BaseModel):
    """What a loader or builder read, kept and dropped, and why: the numbers a results table must cite."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    source: str
    records_read: int = Field(ge=0)
    records_dropped: dict[str, int] = Field(default_factory=dict)
    users_seen: int = Field(ge=0, description="users with at least one usable item")
    users_kept: int = Field(ge=0)
    users_skipped: dict[str, int] = Field(default_factory=dict)
    items: int = Field(ge=0, description="items (history + queries) of the kept users")
    queries: int = Field(ge=0)
    users_with_at_least: dict[int, int] = Field(
        default_factory=dict, description="users seen with >= N usable items, for N in THRESHOLDS"
    )
    kept_users_with_at_least: dict[int, int] = Field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines for logs and result files."""

        def counts(values: Mapping[int, int]) -> str:
            return ", ".join(f">={k}: {v}" for k, v in sorted(values.items()))

        dropped = ", ".join(f"{k} {v}" for k, v in sorted(self.records_dropped.items())) or "none"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.users_skipped.items())) or "none"
        return "\n".join(
            [
                f"{self.task} from {self.source}",
                f"  records read {self.records_read}; dropped: {dropped}",
                f"  users seen {self.users_seen} ({counts(self.users_with_at_least)})",
                f"  users kept {self.users_kept} ({counts(self.kept_users_with_at_least)}); skipped: {skipped}",
                f"  items {self.items}, queries {self.queries}",
            ]
        )


def count_at_least(sizes: list[int], thresholds: tuple[int, ...] = THRESHOLDS) -> dict[int, int]:
    """How many of `sizes` are >= each threshold."""
    return {t: sum(1 for s in sizes if s >= t) for t in thresholds}


class EvalDataset(BaseModel):
    """The users of one task plus the report of how they were obtained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    users: tuple[EvalUser, ...]
    report: BuildReport

    def user(self, user_id: str) -> EvalUser:
        for candidate in self.users:
            if candidate.user_id == user_id:
                return candidate
        raise InvalidInputError("user_id", user_id, f"not in this {self.task} dataset")

    @property
    def n_queries(self) -> int:
        return sum(len(u.queries) for u in self.users)
