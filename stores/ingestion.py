"""The write path of the memory store: records validated into rows with their identity, repeats found (within the
call and against stored rows), new rows embedded and inserted through Arrow a batch at a time, and the cached FAISS
partitions extended once the transaction has committed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from persona_agent.core.errors import InvalidInputError
from persona_agent.stores.records import NewInteraction
from persona_agent.stores.rows import content_hash, micros
from persona_agent.stores.validation import metadata_json, to_utc_naive, validate_text, validate_user_id
from persona_agent.stores.vector_index import PartitionCache

Row = dict[str, Any]
"""A validated record: the `interactions` columns but id, seq and embedding."""
Encode = Callable[[list[str]], np.ndarray]
Progress = Callable[[int], None]
_ARROW_COLUMNS = (
    ("user_id", pa.string()),
    ("created_at", pa.timestamp("us")),
    ("task", pa.string()),
    ("query", pa.string()),
    ("response", pa.string()),
    ("metadata", pa.string()),
    ("content_hash", pa.string()),
)


def _interaction(item: Any, where: str) -> NewInteraction:
    try:
        return item if isinstance(item, NewInteraction) else NewInteraction.model_validate(item)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join([where, *(str(p) for p in error["loc"][:1])])  # not union members
        raise InvalidInputError(field, error.get("input"), error["msg"]) from None
    except Exception as exc:  # TypeError for non-mappings
        raise InvalidInputError(where, item, f"is not an interaction ({exc})") from None


def normalise(
    records: Sequence[tuple[str, NewInteraction | Mapping[str, Any]]], now: datetime, max_chars: int
) -> list[Row]:
    """Validate every record (all of them, before anything is written) into a row with its identity hash."""
    rows = []
    for i, record in enumerate(records):
        where = f"items[{i}]"
        if not isinstance(record, tuple | list) or len(record) != 2:
            raise InvalidInputError(f"records[{i}]", record, "must be a (user_id, interaction) pair")
        user, item = record
        user = validate_user_id(user, "user_id")
        rec = _interaction(item, where)
        query = validate_text(rec.query, f"{where}.query", max_chars)
        response = validate_text(rec.response, f"{where}.response", max_chars, allow_empty=True)
        if rec.task is not None:
            validate_text(rec.task, f"{where}.task", 128)
        metadata = metadata_json(rec.metadata, f"{where}.metadata")
        given = None if rec.created_at is None else to_utc_naive(rec.created_at, f"{where}.created_at")
        rows.append(
            {
                "user_id": user,
                "query": query,
                "response": response,
                "task": rec.task,
                "metadata": metadata,
                "created_at": now if given is None else given,
                "content_hash": content_hash(user, given, query, response),
            }
        )
    return rows


def stored_ids(cur: duckdb.DuckDBPyConnection, hashes: list[str]) -> dict[str, str]:
    """The stored row (the earliest, should older duplicates exist) of each of these identities."""
    cur.register("_new_hashes", pa.table({"content_hash": pa.array(hashes, pa.string())}))
    try:
        found = cur.execute(
            "SELECT i.content_hash, arg_min(i.id, i.seq) FROM interactions i "
            "SEMI JOIN _new_hashes n ON i.content_hash = n.content_hash GROUP BY i.content_hash"
        ).fetchall()
    finally:
        cur.unregister("_new_hashes")
    return dict(found)


def insert_rows(
    cur: duckdb.DuckDBPyConnection, rows: list[Row], ids: list[str], seqs: range, vectors: np.ndarray, dim: int
) -> None:
    """One Arrow insert of these rows with their ids, `seq` numbers and vectors."""
    table = pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "seq": pa.array(seqs, pa.int64()),
            **{name: pa.array([r[name] for r in rows], kind) for name, kind in _ARROW_COLUMNS},
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
        }
    )
    cur.register("_new_rows", table)
    try:
        cur.execute("INSERT INTO interactions BY NAME SELECT * FROM _new_rows")
    finally:
        cur.unregister("_new_rows")


class IngestBatch:
    """One `ingest` call's rows with each identity's first record (`unique`: later repeats in the call are
    skipped), and their vectors: the caller's `given` ones, or embedded by `encode` (which checks them). When the
    new rows fit in one batch of `size` they are embedded here, before the caller takes the write lock."""

    def __init__(self, rows: list[Row], given: np.ndarray | None, size: int, encode: Encode) -> None:
        self.rows = rows
        self.size = size
        self._given = given
        self._encode = encode
        self.first: dict[str, int] = {}  # each identity's first record
        for i, row in enumerate(rows):
            self.first.setdefault(row["content_hash"], i)
        self.unique = list(self.first.values())
        self._slot = {i: k for k, i in enumerate(self.unique)}
        self._early: np.ndarray | None = None
        self._early = self._vectors(self.unique) if 0 < len(self.unique) <= size else None

    def _vectors(self, positions: list[int]) -> np.ndarray:
        if self._early is not None:
            return self._early[[self._slot[i] for i in positions]]
        if self._given is not None:
            return self._given[positions]
        return self._encode([self.rows[i]["query"] for i in positions])

    def insert(
        self,
        cur: duckdb.DuckDBPyConnection,
        fresh: list[int],
        last_seq: int,
        owner: dict[str, str],
        cached_users: set[str],
        dim: int,
        progress: Progress | None,
    ) -> tuple[list[str], list[tuple[Row, str, np.ndarray]]]:
        """Insert the `fresh` records `size` at a time, numbered on from `last_seq`, and record each new id in
        `owner` (identity -> id). Returns the new ids and the (row, id, vector) of the users in `cached_users`."""
        added: list[str] = []
        cached: list[tuple[Row, str, np.ndarray]] = []
        seq = last_seq
        for start in range(0, len(fresh), self.size):
            chunk = fresh[start : start + self.size]
            vectors = self._vectors(chunk)
            ids = [f"mem_{uuid.uuid4().hex}" for _ in chunk]
            insert_rows(cur, [self.rows[i] for i in chunk], ids, range(seq + 1, seq + 1 + len(chunk)), vectors, dim)
            seq += len(chunk)
            for i, id_, vec in zip(chunk, ids, vectors, strict=True):
                owner[self.rows[i]["content_hash"]] = id_
                if self.rows[i]["user_id"] in cached_users:
                    cached.append((self.rows[i], id_, vec))
            added.extend(ids)
            if progress is not None:
                progress(len(chunk))
        return added, cached


def extend_partitions(index: PartitionCache, committed: list[tuple[Row, str, np.ndarray]]) -> None:
    """Append committed rows to the partitions that were cached (others are built from DuckDB later)."""
    by_user: dict[str, list[tuple[Row, str, np.ndarray]]] = {}
    for entry in committed:
        by_user.setdefault(entry[0]["user_id"], []).append(entry)
    for user, entries in by_user.items():
        part = index.get(user)
        if part is None:
            continue
        entries.sort(key=lambda e: e[0]["created_at"])  # stable: the insertion order breaks ties, as `seq` does
        payload = [
            (id_, user, r["created_at"], r["task"], r["query"], r["response"], r["metadata"]) for r, id_, _ in entries
        ]
        times = np.array([micros(r["created_at"]) for r, _, _ in entries], dtype=np.int64)
        vectors = np.stack([vec for _, _, vec in entries]).astype(np.float32, copy=False)
        part.append(payload, times, [r["task"] for r, _, _ in entries], vectors)
