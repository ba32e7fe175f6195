"""The read path of the memory store: a user's interactions by id, by time and by similarity (through the user's
FAISS partition, loaded from DuckDB on first use), and their profile. `MemoryStore` adds the writes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from persona_agent.core.errors import InvalidInputError, UnknownUserError
from persona_agent.stores.connection import StoreConnection
from persona_agent.stores.embeddings import Embedder
from persona_agent.stores.records import Interaction, Profile, SearchHit
from persona_agent.stores.rows import COLUMNS, load_partition, micros, row_to_interaction
from persona_agent.stores.validation import (
    to_utc_naive,
    validate_id,
    validate_k,
    validate_text,
    validate_user_id,
    validate_vectors,
)
from persona_agent.stores.vector_index import PartitionCache, UserPartition


class MemoryReader:
    """Reads of one store file: safe from many threads at once, and during a compaction (see `StoreConnection`)."""

    def __init__(
        self, conn: StoreConnection, embedder: Embedder, *, dim: int, max_text_chars: int, max_cached_users: int
    ) -> None:
        self._conn = conn
        self.path = conn.path
        self.read_only = conn.read_only
        self.embedder = embedder
        self.dim = dim
        self.max_text_chars = max_text_chars
        self._index = PartitionCache(dim, self._load_partition, max_users=max_cached_users)

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._conn.cursor()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the store's connection, for statements inside `transaction()` or a
        single-threaded tool: a compaction may close it at any other time. Concurrent readers use `query`."""
        return self._conn.cursor()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        """All rows of one read statement, safe against a concurrent compaction; for components keeping their
        own tables in the same file (the persona registry: DuckDB allows one read-write connection per file)."""
        return self._conn.query(sql, params)

    def _one(self, sql: str, params: list[Any] | None = None) -> tuple | None:
        return self._conn.one(sql, params)

    def get(self, user_id: str, interaction_id: str) -> Interaction:
        """One of the user's interactions by id (another user's id is not found, never returned)."""
        user_id = validate_user_id(user_id)
        interaction_id = validate_id(interaction_id, "interaction_id")
        row = self._one(f"SELECT {COLUMNS} FROM interactions WHERE user_id = ? AND id = ?", [user_id, interaction_id])
        if row is None:
            raise InvalidInputError("interaction_id", interaction_id, f"no such interaction for user {user_id!r}")
        return row_to_interaction(row)

    def latest(
        self, user_id: str, n: int, *, before: datetime | float | None = None, task: str | None = None
    ) -> list[Interaction]:
        """The user's latest `n` interactions (strictly before `before`, if given), oldest first."""
        user_id = self._known_user(user_id)
        n = validate_k(n, "n")
        where, params = self._filters(user_id, before, task)
        rows = self.query(
            f"SELECT {COLUMNS} FROM (SELECT {COLUMNS}, seq FROM interactions WHERE {where} "
            "ORDER BY created_at DESC, seq DESC LIMIT ?) ORDER BY created_at, seq",
            [*params, n],
        )
        return [row_to_interaction(r) for r in rows]

    def history(
        self, user_id: str, *, before: datetime | float | None = None, task: str | None = None
    ) -> list[Interaction]:
        """All of the user's interactions (strictly before `before`, if given), oldest first."""
        user_id = self._known_user(user_id)
        where, params = self._filters(user_id, before, task)
        rows = self.query(f"SELECT {COLUMNS} FROM interactions WHERE {where} ORDER BY created_at, seq", params)
        return [row_to_interaction(r) for r in rows]

    def _filters(self, user_id: str, before: datetime | float | None, task: str | None) -> tuple[str, list[Any]]:
        clauses, params = ["user_id = ?"], [user_id]
        if before is not None:
            clauses.append("created_at < ?")
            params.append(to_utc_naive(before, "before"))
        if task is not None:
            clauses.append("task = ?")
            params.append(task)
        return " AND ".join(clauses), params

    def count(self, user_id: str | None = None) -> int:
        """Interactions stored for one user (0 if unknown), or for everyone."""
        if user_id is None:
            return int(self._one("SELECT count(*) FROM interactions")[0])
        user_id = validate_user_id(user_id)
        return int(self._one("SELECT count(*) FROM interactions WHERE user_id = ?", [user_id])[0])

    def users(self) -> list[str]:
        """Every user with at least one interaction or profile, sorted."""
        rows = self.query("SELECT user_id FROM interactions UNION SELECT user_id FROM profiles ORDER BY user_id")
        return [r[0] for r in rows]

    def _known_user(self, user_id: str) -> str:
        user_id = validate_user_id(user_id)
        if self.count(user_id) == 0:
            raise UnknownUserError(user_id)
        return user_id

    def search(
        self,
        user_id: str,
        query: str | None = None,
        *,
        vector: np.ndarray | Sequence[float] | None = None,
        k: int = 5,
        before: datetime | float | None = None,
        task: str | None = None,
    ) -> list[SearchHit]:
        """The user's `k` most similar interactions to `query` (or `vector`), best first.

        Only this user's rows are searched (a per-user partition, not a filter after the fact); with
        `before`, only rows strictly earlier; with `task`, only rows of that task. Returns exactly
        `k` hits whenever that many rows are eligible.
        """
        user_id = validate_user_id(user_id)
        k = validate_k(k)
        if (query is None) == (vector is None):
            raise InvalidInputError("query", query, "give exactly one of query or vector")
        before_us = None if before is None else micros(to_utc_naive(before, "before"))
        if query is not None:
            query = validate_text(query, "query", self.max_text_chars)
        else:
            vec = validate_vectors(vector, self.dim, 1, field="vector")
        part = self._partition(user_id)
        if len(part) == 0:
            raise UnknownUserError(user_id)
        if query is not None:
            vec = self.embedder.encode([query])
        hits = part.search(vec[0], k, before_us=before_us, task=task)
        objects = part.objects  # records are frozen: build each once per cached partition, then share it
        return [
            SearchHit.model_construct(
                interaction=objects.get(row[0]) or objects.setdefault(row[0], row_to_interaction(row)),
                score=score,
                rank=rank,
            )
            for rank, (row, score) in enumerate(hits)
        ]

    def get_profile(self, user_id: str, version: int | None = None) -> Profile | None:
        """The user's latest profile (or the given version); None if there is none."""
        user_id = validate_user_id(user_id)
        sql = "SELECT user_id, version, text, created_at, source_ids FROM profiles WHERE user_id = ?"
        params: list[Any] = [user_id]
        if version is not None:
            sql += " AND version = ?"
            params.append(validate_k(version, "version"))
        row = self._one(sql + " ORDER BY version DESC LIMIT 1", params)
        if row is None:
            return None
        return Profile(user_id=row[0], version=row[1], text=row[2], created_at=row[3], source_ids=tuple(row[4]))

    def _load_partition(self, user_id: str) -> tuple[list[tuple], np.ndarray, list[str | None], np.ndarray]:
        return load_partition(self._cursor(), user_id, self.dim)

    def _partition(self, user_id: str) -> UserPartition:
        part = self._index.get(user_id)
        if part is None:
            with self._conn.write_lock:
                part = self._index.get(user_id)
                if part is None:
                    part = self._index.build(user_id)
        return part

    def rebuild_index(self, user_id: str | None = None) -> None:
        """Drop cached FAISS partitions (one user's or all); they are rebuilt from DuckDB on next search."""
        with self._conn.write_lock:
            self._index.drop(None if user_id is None else validate_user_id(user_id))
