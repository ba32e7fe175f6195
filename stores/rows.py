"""How an interaction row sits in DuckDB: its columns, its time in Unix microseconds, its identity hash, and the
way a stored row becomes an `Interaction` or a FAISS partition's arrays."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import duckdb
import numpy as np

from persona_agent.stores.records import Interaction

COLUMN_NAMES = ("id", "user_id", "created_at", "task", "query", "response", "metadata")
COLUMNS = ", ".join(COLUMN_NAMES)
_EPOCH = datetime(1970, 1, 1)


def micros(ts: datetime) -> int:
    """Naive-UTC datetime -> Unix microseconds, exactly (no float rounding)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def utcnow() -> datetime:
    """Now, as the store keeps times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def content_hash(user_id: str, given: datetime | None, query: str, response: str) -> str:
    """A row's identity (schema `_v3_interaction_identity` computes the same in SQL): sha256 of the user, the time
    as given (Unix microseconds; '' when none was given, so such a row is identified by its content alone), the
    query and the response, joined by NUL (which texts and ids may not hold)."""
    when = "" if given is None else str(micros(given))
    return hashlib.sha256("\0".join((user_id, when, query, response)).encode()).hexdigest()


def row_to_interaction(row: tuple) -> Interaction:
    """A row of `COLUMNS` as an `Interaction`."""
    # Rows come from our own table, validated on the way in: skip pydantic's validation on the way out
    # (it is most of a search's overhead over FAISS).
    id_, user_id, created_at, task, query, response, metadata = row
    return Interaction.model_construct(
        id=id_,
        user_id=user_id,
        created_at=created_at,
        task=task,
        query=query,
        response=response,
        metadata=json.loads(metadata),
    )


def load_partition(
    cur: duckdb.DuckDBPyConnection, user_id: str, dim: int
) -> tuple[list[tuple], np.ndarray, list[str | None], np.ndarray]:
    """One user's rows in time order, as a `vector_index.PartitionCache` loader returns them: the rows (of
    `COLUMNS`), their times (Unix microseconds), their tasks and their vectors, read through Arrow."""
    table = cur.sql(
        f"SELECT {COLUMNS}, epoch_us(created_at) AS t, embedding FROM interactions "
        "WHERE user_id = $user ORDER BY created_at, seq",
        params={"user": user_id},
    ).to_arrow_table()
    n = table.num_rows
    if n:
        emb = table.column("embedding").combine_chunks()
        vectors = np.asarray(emb.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, dim)
    else:
        vectors = np.zeros((0, dim), dtype=np.float32)
    columns = [table.column(name).to_pylist() for name in COLUMN_NAMES]
    return (
        list(zip(*columns, strict=True)),
        np.asarray(table.column("t").to_numpy(zero_copy_only=False), dtype=np.int64),
        table.column("task").to_pylist(),
        np.ascontiguousarray(vectors),
    )
