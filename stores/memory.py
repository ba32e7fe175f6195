"""The memory store: episodic interactions and semantic profiles in one DuckDB file, searched through
per-user FAISS partitions.

DuckDB is the source of truth for every row and vector; FAISS partitions are rebuilt from it lazily,
so a crash can never leave the index and the database disagreeing.

Concurrency: one `MemoryStore` is safe to share between threads of one process (writes are
serialised, searches run concurrently). DuckDB allows one read-write process per file: run one writer
process (e.g. the service) and open the file from other processes with `read_only=True` only while no
writer holds it.

Forgetting: a deleted row's bytes stay in DuckDB's freed blocks, so `forget` schedules a compaction (the file
rewritten, see `stores.compaction`) within `compaction_delay_seconds`, run by a timer in this process and
always on `close`; forgets inside that window share one rewrite.

The parts: `stores.connection` (the file, its cursors and locks), `stores.reading` (the reads and searches this
class inherits), `stores.ingestion` (the write path of `ingest`), `stores.compaction_schedule` (when the file is
rewritten), `stores.rows` (how a row is laid out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, StoreError
from persona_agent.stores.compaction_schedule import CompactionSchedule
from persona_agent.stores.connection import StoreConnection
from persona_agent.stores.embeddings import Embedder, SentenceTransformerEmbedder
from persona_agent.stores.ingestion import IngestBatch, extend_partitions, normalise, stored_ids
from persona_agent.stores.reading import MemoryReader
from persona_agent.stores.records import ForgetReport, IngestReport, NewInteraction, Profile
from persona_agent.stores.rows import utcnow
from persona_agent.stores.schema import ensure_schema, refuse_newer
from persona_agent.stores.validation import validate_k, validate_text, validate_user_id, validate_vectors


def _resolve_dim(conn: StoreConnection, embedder: Embedder) -> int:
    """The vector dimension, from the store's metadata when it was built by the same embedder
    (so opening a store does not load the model), else from the embedder itself."""
    try:
        meta = dict(conn.raw.execute("SELECT key, value FROM store_meta").fetchall())
    except duckdb.CatalogException:
        if conn.read_only:
            raise StoreError(f"{conn.path} is not a PersonaAgent memory store (no store_meta table).") from None
        meta = {}
    if meta.get("embedder") == embedder.name and "embedding_dim" in meta:
        return int(meta["embedding_dim"])
    return int(embedder.dim)


class MemoryStore(MemoryReader):
    """Per-user episodic and semantic memory.

    Args:
        path: the DuckDB file (default: the settings' `db_path`); ":memory:" for a throwaway store.
        embedder: turns queries into vectors (default: the settings' sentence-transformers model).
        settings: where defaults come from (default: `Settings()`, i.e. the environment).
        read_only: open without writing (another process may hold the file for writing only if it is not open).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        embedder: Embedder | None = None,
        settings: Settings | None = None,
        read_only: bool = False,
        max_cached_users: int = 4096,
    ) -> None:
        self.settings = settings or Settings()
        embedder = embedder or SentenceTransformerEmbedder(self.settings.embedder)
        conn = StoreConnection(Path(path) if path is not None else self.settings.resolved_db_path, read_only=read_only)
        try:
            dim = _resolve_dim(conn, embedder)
            if read_only:
                refuse_newer(conn.raw)
            else:
                ensure_schema(conn.raw, dim=dim, embedder=embedder.name)
            seq = int(conn.raw.execute("SELECT coalesce(max(seq), 0) FROM interactions").fetchall()[0][0])
        except duckdb.Error as exc:  # a file cut short, or another application's database (setup rolled back)
            conn.abandon()
            raise StoreError(
                f"Cannot use {conn.path}: {exc}. The file is damaged or not a PersonaAgent memory store, and was "
                "left as it is: restore it from a backup, or set PERSONA_AGENT_DB_PATH to another file."
            ) from exc
        except BaseException:
            conn.abandon()
            raise
        super().__init__(
            conn, embedder, dim=dim, max_text_chars=self.settings.max_text_chars, max_cached_users=max_cached_users
        )
        self._compaction = CompactionSchedule(conn, self.settings)
        self._seq = seq
        self._compaction.resume()

    # -- plumbing -------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One DuckDB transaction, serialised with the store's own writes; rolled back if the block raises."""
        with self._conn.transaction() as cur:
            yield cur

    def __deepcopy__(self, memo: dict) -> MemoryStore:
        """A store is a shared handle: copies of a program share it (DSPy deep-copies programs)."""
        return self

    def close(self) -> None:
        """Run a pending compaction, then close. A compaction stays pending in the file if it fails (the next
        writable open schedules it) or if another store of this process holds the file (the last one runs it)."""
        with self._conn.write_lock:
            if self._conn.closed:
                return
            self._compaction.on_close()
            self._conn.close()
            self._index.drop()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writable(self) -> None:
        self._conn.require_writable()

    # -- episodic memory ------------------------------------------------------------------------------

    def add(
        self,
        user_id: str,
        items: Sequence[NewInteraction | Mapping[str, Any]],
        *,
        embeddings: np.ndarray | None = None,
    ) -> list[str]:
        """Store a batch of interactions for one user in one transaction; returns their ids in order.

        Queries are embedded with the store's embedder unless `embeddings` (one row per item) are given.
        Everything is validated before anything is written; the batch is stored whole or not at all. An item
        that repeats a stored one (see `NewInteraction`) is skipped: its id is the stored row's.
        """
        user_id = validate_user_id(user_id)
        if isinstance(items, NewInteraction | Mapping | str) or not isinstance(items, Sequence):
            raise InvalidInputError("items", items, "must be a sequence of interactions")
        return list(self.ingest([(user_id, item) for item in items], embeddings=embeddings).ids)

    def ingest(
        self,
        records: Sequence[tuple[str, NewInteraction | Mapping[str, Any]]],
        *,
        embeddings: np.ndarray | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> IngestReport:
        """Store `(user_id, interaction)` pairs for any number of users in ONE transaction, so a crash leaves all
        of them or none. Records that repeat a stored row or an earlier record of the call are skipped and counted.

        New rows are embedded and inserted `batch_size` at a time (default: all at once; one Arrow insert per
        batch) and `progress(n)` is told as records are done; the commit comes after the last batch, and the
        cached FAISS partitions are extended only after it. A single batch is embedded before the write lock is
        taken; more batches are embedded under it, after the duplicates are known, so a rerun embeds nothing.
        """
        self._require_writable()
        if isinstance(records, str) or not isinstance(records, Sequence):
            raise InvalidInputError("records", records, "must be a sequence of (user_id, interaction) pairs")
        size = len(records) if batch_size is None else validate_k(batch_size, "batch_size")
        rows = normalise(records, utcnow(), self.max_text_chars)
        given = None if embeddings is None else validate_vectors(embeddings, self.dim, len(rows))
        batch = IngestBatch(rows, given, size, self._encode)
        if progress is not None:
            progress(len(rows) - len(batch.unique))
        with self._conn.write_lock:
            with self._conn.transaction() as cur:
                owner = stored_ids(cur, list(batch.first))
                fresh = [i for i in batch.unique if rows[i]["content_hash"] not in owner]
                if progress is not None:
                    progress(len(batch.unique) - len(fresh))
                cached_users = {u for u in {rows[i]["user_id"] for i in fresh} if self._index.get(u) is not None}
                added, cached = batch.insert(cur, fresh, self._seq, owner, cached_users, self.dim, progress)
            self._seq += len(added)
            extend_partitions(self._index, cached)
        return IngestReport(
            ids=tuple(owner[row["content_hash"]] for row in rows), added=len(added), skipped=len(rows) - len(added)
        )

    def _encode(self, texts: list[str]) -> np.ndarray:
        return validate_vectors(self.embedder.encode(texts), self.dim, len(texts))

    def add_interaction(
        self,
        user_id: str,
        query: str,
        response: str = "",
        *,
        task: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        created_at: datetime | float | None = None,
    ) -> str:
        """Store one interaction the system records (an answer, feedback); returns its id. It is stamped with the
        time of the call unless `created_at` is given, so asking the same twice keeps two rows."""
        when = utcnow() if created_at is None else created_at
        item = {"query": query, "response": response, "task": task, "metadata": dict(metadata or {})}
        return self.add(user_id, [{**item, "created_at": when}])[0]

    # -- semantic memory ------------------------------------------------------------------------------

    def set_profile(self, user_id: str, text: str, *, source_ids: Sequence[str] = ()) -> Profile:
        """Store a new profile version for the user (versions count up from 1)."""
        self._require_writable()
        user_id = validate_user_id(user_id)
        text = validate_text(text, "text", self.max_text_chars)
        if isinstance(source_ids, str) or not all(isinstance(s, str) for s in source_ids):
            raise InvalidInputError("source_ids", source_ids, "must be a sequence of interaction ids")
        created = utcnow()
        with self._conn.write_lock:
            cur = self._cursor()
            top = cur.execute("SELECT coalesce(max(version), 0) FROM profiles WHERE user_id = ?", [user_id]).fetchall()
            version = int(top[0][0]) + 1
            cur.execute(
                "INSERT INTO profiles VALUES (?, ?, ?, ?, ?)", [user_id, version, text, created, list(source_ids)]
            )
        return Profile(user_id=user_id, version=version, text=text, created_at=created, source_ids=tuple(source_ids))

    # -- lifecycle -------------------------------------------------------------------------------------

    def forget(self, user_id: str) -> ForgetReport:
        """Remove every row, vector and profile of one user, in one transaction, and schedule the compaction
        that takes their bytes off the disk (`erased_by` in the report). Idempotent."""
        self._require_writable()
        user_id = validate_user_id(user_id)
        with self._conn.write_lock:
            with self._conn.transaction() as cur:
                n_rows = cur.execute("DELETE FROM interactions WHERE user_id = ?", [user_id]).fetchall()[0][0]
                n_profiles = cur.execute("DELETE FROM profiles WHERE user_id = ?", [user_id]).fetchall()[0][0]
                due = self._compaction.mark_due(cur)
            self._index.drop(user_id)
            self._compaction.schedule(due)
        return ForgetReport(
            user_id=user_id, interactions=int(n_rows), vectors=int(n_rows), profiles=int(n_profiles), erased_by=due
        )

    def schedule_compaction(self) -> datetime | None:
        """Have the bytes of every row deleted so far (by the store or a component sharing its file) leave the
        disk within `compaction_delay_seconds`; returns that time (UTC), or None for an in-memory store."""
        with self.transaction() as cur:
            due = self._compaction.mark_due(cur)
        with self._conn.write_lock:
            self._compaction.schedule(due)
        return due

    @property
    def compaction_due(self) -> datetime | None:
        """When the pending compaction must have run (UTC), or None if no deleted bytes await one."""
        return self._compaction.due

    @property
    def compactions(self) -> int:
        """How many times this store has rewritten its file."""
        return self._compaction.compactions

    def compact(self) -> datetime:
        """Rewrite the database file now (see `stores.compaction`), so no byte of a deleted row is left in it.
        Writes wait for the whole rewrite; reads go on during the copy and wait only while the file is swapped
        and reopened. Returns when it finished (UTC)."""
        return self._compaction.compact()
