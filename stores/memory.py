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
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, StoreError, UnknownUserError
from persona_agent.stores.compaction import (
    DUE_KEY,
    OPEN_FILES,
    ReadGate,
    copy_live_rows,
    discard_leftovers,
    move_into_place,
)
from persona_agent.stores.embeddings import Embedder, SentenceTransformerEmbedder
from persona_agent.stores.records import ForgetReport, IngestReport, Interaction, NewInteraction, Profile, SearchHit
from persona_agent.stores.schema import ensure_schema
from persona_agent.stores.validation import (
    metadata_json,
    to_utc_naive,
    validate_id,
    validate_k,
    validate_text,
    validate_user_id,
    validate_vectors,
)
from persona_agent.stores.vector_index import PartitionCache

_COLUMN_NAMES = ("id", "user_id", "created_at", "task", "query", "response", "metadata")
_COLUMNS = ", ".join(_COLUMN_NAMES)
_EPOCH = datetime(1970, 1, 1)
logger = logging.getLogger(__name__)


def _micros(ts: datetime) -> int:
    """Naive-UTC datetime -> Unix microseconds, exactly (no float rounding)."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def content_hash(user_id: str, given: datetime | None, query: str, response: str) -> str:
    """A row's identity (schema `_v3_interaction_identity` computes the same in SQL): sha256 of the user, the time
    as given (Unix microseconds; '' when none was given, so such a row is identified by its content alone), the
    query and the response, joined by NUL (which texts and ids may not hold)."""
    when = "" if given is None else str(_micros(given))
    return hashlib.sha256("\0".join((user_id, when, query, response)).encode()).hexdigest()


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _row_to_interaction(row: tuple) -> Interaction:
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


class MemoryStore:
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
        self.embedder: Embedder = embedder or SentenceTransformerEmbedder(self.settings.embedder)
        self.max_text_chars = self.settings.max_text_chars
        db_path = Path(path) if path is not None else self.settings.resolved_db_path
        self.path = db_path
        self._on_disk = str(db_path) != ":memory:"
        self._key = str(db_path.resolve()) if self._on_disk else ""
        if self._on_disk and not read_only:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        with OPEN_FILES.lock:
            if self._on_disk and not read_only and not OPEN_FILES.holders(self._key):
                discard_leftovers(db_path)
            self._con = self._connect(read_only)
            if self._on_disk:
                OPEN_FILES.add(self._key)
        self.read_only = read_only
        try:
            self.dim = self._resolve_dim()
            if not read_only:
                ensure_schema(self._con, dim=self.dim, embedder=self.embedder.name)
        except BaseException:
            with OPEN_FILES.lock:
                self._con.close()
                if self._on_disk:
                    OPEN_FILES.remove(self._key)
            raise
        self._write_lock = threading.RLock()
        self._gate = ReadGate()  # reads not under the write lock hold it shared; a compaction alone
        self._local = threading.local()
        self._generation = 0  # bumped when a compaction reopens the file: cursors of older ones are closed
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._closed = False
        self._timer: threading.Timer | None = None
        self._due: datetime | None = None  # when the pending compaction must have run (UTC), if one is
        self.compactions = 0
        self._seq = int(self._one("SELECT coalesce(max(seq), 0) FROM interactions")[0])
        self._index = PartitionCache(self.dim, self._load_partition, max_users=max_cached_users)
        if not read_only and self._on_disk:
            left = self._one("SELECT value FROM store_meta WHERE key = ?", [DUE_KEY])
            if left is not None:  # a forget whose compaction this process's predecessor did not run
                logger.warning("%s: a compaction due at %s was pending: scheduled", db_path, left[0])
                self._schedule(datetime.fromisoformat(left[0]))

    # -- plumbing -------------------------------------------------------------------------------------

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise StoreError(f"Cannot open the memory store at {self.path}: {exc}") from exc

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB cursor private to the calling thread (a DuckDB connection is not thread-safe), on the
        current connection. Use it under the write lock or the read gate (`query`): a compaction closes it."""
        if self._closed:
            raise StoreError("The memory store is closed.")
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == self._generation:
            return held[1]
        cur = self._con.cursor()
        self._local.held = (self._generation, cur)
        with self._cursors_lock:
            self._cursors.append(cur)
        return cur

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor on the store's connection, for statements inside `transaction()` or a
        single-threaded tool: a compaction may close it at any other time. Concurrent readers use `query`."""
        return self._cursor()

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        """All rows of one read statement, safe against a concurrent compaction; for components keeping their
        own tables in the same file (the persona registry: DuckDB allows one read-write connection per file)."""
        with self._gate.shared():
            return self._cursor().execute(sql, params or []).fetchall()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One DuckDB transaction, serialised with the store's own writes; rolled back if the block raises."""
        self._require_writable()
        with self._write_lock:
            cur = self._cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def _resolve_dim(self) -> int:
        """The vector dimension, from the store's metadata when it was built by the same embedder
        (so opening a store does not load the model), else from the embedder itself."""
        try:
            meta = dict(self._con.execute("SELECT key, value FROM store_meta").fetchall())
        except duckdb.CatalogException:
            if self.read_only:
                raise StoreError(f"{self.path} is not a PersonaAgent memory store (no store_meta table).") from None
            meta = {}
        if meta.get("embedder") == self.embedder.name and "embedding_dim" in meta:
            return int(meta["embedding_dim"])
        return int(self.embedder.dim)

    def _one(self, sql: str, params: list[Any] | None = None) -> tuple | None:
        """The first row of a query, or None. (DuckDB 2 wants every result read to the end.)"""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def __deepcopy__(self, memo: dict) -> MemoryStore:
        """A store is a shared handle: copies of a program share it (DSPy deep-copies programs)."""
        return self

    def close(self) -> None:
        """Run a pending compaction, then close. A compaction stays pending in the file if it fails (the next
        writable open schedules it) or if another store of this process holds the file (the last one runs it)."""
        with self._write_lock:
            if self._closed:
                return
            self._cancel_timer()
            if self._on_disk and not self.read_only and (self._due is not None or self._pending_in_file()):
                if self._shared():
                    logger.info("%s: another store of this process holds the file: it compacts on close", self.path)
                else:
                    try:
                        self.compact()
                    except (StoreError, duckdb.Error, OSError):
                        logger.exception("%s: compaction on close failed; the next writable open retries", self.path)
            with OPEN_FILES.lock, self._gate.exclusive():
                self._closed = True
                self._close_connection()
                if self._on_disk:
                    OPEN_FILES.remove(self._key)
            self._index.drop()

    def _pending_in_file(self) -> bool:
        return self._one("SELECT 1 FROM store_meta WHERE key = ?", [DUE_KEY]) is not None

    def _shared(self) -> bool:
        with OPEN_FILES.lock:
            return OPEN_FILES.holders(self._key) > 1

    def _close_connection(self) -> None:
        with self._cursors_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self._con.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_writable(self) -> None:
        if self.read_only:
            raise StoreError("This memory store was opened read-only.")

    def _load_partition(self, user_id: str) -> tuple[list[tuple], np.ndarray, list[str | None], np.ndarray]:
        table = (
            self._cursor()
            .sql(
                f"SELECT {_COLUMNS}, epoch_us(created_at) AS t, embedding FROM interactions "
                "WHERE user_id = $user ORDER BY created_at, seq",
                params={"user": user_id},
            )
            .to_arrow_table()
        )
        n = table.num_rows
        if n:
            emb = table.column("embedding").combine_chunks()
            vectors = np.asarray(emb.values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, self.dim)
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        columns = [table.column(name).to_pylist() for name in _COLUMN_NAMES]
        return (
            list(zip(*columns, strict=True)),
            np.asarray(table.column("t").to_numpy(zero_copy_only=False), dtype=np.int64),
            table.column("task").to_pylist(),
            np.ascontiguousarray(vectors),
        )

    def _partition(self, user_id: str):
        part = self._index.get(user_id)
        if part is None:
            with self._write_lock:
                part = self._index.get(user_id)
                if part is None:
                    part = self._index.build(user_id)
        return part

    # -- episodic memory ------------------------------------------------------------------------------

    def _normalise(
        self, records: Sequence[tuple[str, NewInteraction | Mapping[str, Any]]], now: datetime
    ) -> list[dict[str, Any]]:
        """Validate every record (all of them, before anything is written) into a row with its identity hash."""
        rows = []
        for i, record in enumerate(records):
            where = f"items[{i}]"
            if not isinstance(record, tuple | list) or len(record) != 2:
                raise InvalidInputError(f"records[{i}]", record, "must be a (user_id, interaction) pair")
            user, item = record
            user = validate_user_id(user, "user_id")
            try:
                rec = item if isinstance(item, NewInteraction) else NewInteraction.model_validate(item)
            except ValidationError as exc:
                error = exc.errors()[0]
                field = ".".join([where, *(str(p) for p in error["loc"][:1])])  # not union members
                raise InvalidInputError(field, error.get("input"), error["msg"]) from None
            except Exception as exc:  # TypeError for non-mappings
                raise InvalidInputError(where, item, f"is not an interaction ({exc})") from None
            query = validate_text(rec.query, f"{where}.query", self.max_text_chars)
            response = validate_text(rec.response, f"{where}.response", self.max_text_chars, allow_empty=True)
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
        rows = self._normalise(records, _utcnow())
        given = None if embeddings is None else validate_vectors(embeddings, self.dim, len(rows))
        first: dict[str, int] = {}  # each identity's first record
        for i, row in enumerate(rows):
            first.setdefault(row["content_hash"], i)
        unique = list(first.values())
        slot = {i: k for k, i in enumerate(unique)}
        early = self._vectors(rows, unique, given) if 0 < len(unique) <= size else None
        if progress is not None:
            progress(len(rows) - len(unique))
        with self._write_lock:
            cur = self._cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                owner = self._stored_ids(cur, list(first))
                fresh = [i for i in unique if rows[i]["content_hash"] not in owner]
                if progress is not None:
                    progress(len(unique) - len(fresh))
                seq, added, cached = self._seq, [], []
                in_cache = {user: self._index.get(user) is not None for user in {rows[i]["user_id"] for i in fresh}}
                for start in range(0, len(fresh), size):
                    chunk = fresh[start : start + size]
                    if early is not None:
                        vectors = early[[slot[i] for i in chunk]]
                    else:
                        vectors = self._vectors(rows, chunk, given)
                    ids = [f"mem_{uuid.uuid4().hex}" for _ in chunk]
                    self._insert(cur, [rows[i] for i in chunk], ids, range(seq + 1, seq + 1 + len(chunk)), vectors)
                    seq += len(chunk)
                    for i, id_, vec in zip(chunk, ids, vectors, strict=True):
                        owner[rows[i]["content_hash"]] = id_
                        if in_cache[rows[i]["user_id"]]:
                            cached.append((rows[i], id_, vec))
                    added.extend(ids)
                    if progress is not None:
                        progress(len(chunk))
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._seq = seq
            self._extend_partitions(cached)
        return IngestReport(
            ids=tuple(owner[row["content_hash"]] for row in rows), added=len(added), skipped=len(rows) - len(added)
        )

    def _vectors(self, rows: list[dict[str, Any]], positions: list[int], given: np.ndarray | None) -> np.ndarray:
        if given is not None:
            return given[positions]
        return validate_vectors(self.embedder.encode([rows[i]["query"] for i in positions]), self.dim, len(positions))

    @staticmethod
    def _stored_ids(cur: duckdb.DuckDBPyConnection, hashes: list[str]) -> dict[str, str]:
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

    def _insert(
        self,
        cur: duckdb.DuckDBPyConnection,
        rows: list[dict[str, Any]],
        ids: list[str],
        seqs: range,
        vectors: np.ndarray,
    ) -> None:
        table = pa.table(
            {
                "id": pa.array(ids, pa.string()),
                "seq": pa.array(seqs, pa.int64()),
                **{
                    name: pa.array([r[name] for r in rows], kind)
                    for name, kind in (
                        ("user_id", pa.string()),
                        ("created_at", pa.timestamp("us")),
                        ("task", pa.string()),
                        ("query", pa.string()),
                        ("response", pa.string()),
                        ("metadata", pa.string()),
                        ("content_hash", pa.string()),
                    )
                },
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
            }
        )
        cur.register("_new_rows", table)
        try:
            cur.execute("INSERT INTO interactions BY NAME SELECT * FROM _new_rows")
        finally:
            cur.unregister("_new_rows")

    def _extend_partitions(self, committed: list[tuple[dict[str, Any], str, np.ndarray]]) -> None:
        """Append committed rows to the partitions that were cached (others are built from DuckDB later)."""
        by_user: dict[str, list[tuple[dict[str, Any], str, np.ndarray]]] = {}
        for entry in committed:
            by_user.setdefault(entry[0]["user_id"], []).append(entry)
        for user, entries in by_user.items():
            part = self._index.get(user)
            if part is None:
                continue
            entries.sort(key=lambda e: e[0]["created_at"])  # stable: the insertion order breaks ties, as `seq` does
            payload = [
                (id_, user, r["created_at"], r["task"], r["query"], r["response"], r["metadata"])
                for r, id_, _ in entries
            ]
            times = np.array([_micros(r["created_at"]) for r, _, _ in entries], dtype=np.int64)
            vectors = np.stack([vec for _, _, vec in entries]).astype(np.float32, copy=False)
            part.append(payload, times, [r["task"] for r, _, _ in entries], vectors)

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
        when = _utcnow() if created_at is None else created_at
        item = {"query": query, "response": response, "task": task, "metadata": dict(metadata or {})}
        return self.add(user_id, [{**item, "created_at": when}])[0]

    def get(self, user_id: str, interaction_id: str) -> Interaction:
        """One of the user's interactions by id (another user's id is not found, never returned)."""
        user_id = validate_user_id(user_id)
        interaction_id = validate_id(interaction_id, "interaction_id")
        row = self._one(f"SELECT {_COLUMNS} FROM interactions WHERE user_id = ? AND id = ?", [user_id, interaction_id])
        if row is None:
            raise InvalidInputError("interaction_id", interaction_id, f"no such interaction for user {user_id!r}")
        return _row_to_interaction(row)

    def latest(
        self, user_id: str, n: int, *, before: datetime | float | None = None, task: str | None = None
    ) -> list[Interaction]:
        """The user's latest `n` interactions (strictly before `before`, if given), oldest first."""
        user_id = self._known_user(user_id)
        n = validate_k(n, "n")
        where, params = self._filters(user_id, before, task)
        rows = self.query(
            f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS}, seq FROM interactions WHERE {where} "
            "ORDER BY created_at DESC, seq DESC LIMIT ?) ORDER BY created_at, seq",
            [*params, n],
        )
        return [_row_to_interaction(r) for r in rows]

    def history(
        self, user_id: str, *, before: datetime | float | None = None, task: str | None = None
    ) -> list[Interaction]:
        """All of the user's interactions (strictly before `before`, if given), oldest first."""
        user_id = self._known_user(user_id)
        where, params = self._filters(user_id, before, task)
        rows = self.query(f"SELECT {_COLUMNS} FROM interactions WHERE {where} ORDER BY created_at, seq", params)
        return [_row_to_interaction(r) for r in rows]

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
        before_us = None if before is None else _micros(to_utc_naive(before, "before"))
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
                interaction=objects.get(row[0]) or objects.setdefault(row[0], _row_to_interaction(row)),
                score=score,
                rank=rank,
            )
            for rank, (row, score) in enumerate(hits)
        ]

    # -- semantic memory ------------------------------------------------------------------------------

    def set_profile(self, user_id: str, text: str, *, source_ids: Sequence[str] = ()) -> Profile:
        """Store a new profile version for the user (versions count up from 1)."""
        self._require_writable()
        user_id = validate_user_id(user_id)
        text = validate_text(text, "text", self.max_text_chars)
        if isinstance(source_ids, str) or not all(isinstance(s, str) for s in source_ids):
            raise InvalidInputError("source_ids", source_ids, "must be a sequence of interaction ids")
        created = _utcnow()
        with self._write_lock:
            cur = self._cursor()
            version = (
                int(
                    cur.execute(
                        "SELECT coalesce(max(version), 0) FROM profiles WHERE user_id = ?", [user_id]
                    ).fetchall()[0][0]
                )
                + 1
            )
            cur.execute(
                "INSERT INTO profiles VALUES (?, ?, ?, ?, ?)", [user_id, version, text, created, list(source_ids)]
            )
        return Profile(user_id=user_id, version=version, text=text, created_at=created, source_ids=tuple(source_ids))

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

    # -- lifecycle -------------------------------------------------------------------------------------

    def forget(self, user_id: str) -> ForgetReport:
        """Remove every row, vector and profile of one user, in one transaction, and schedule the compaction
        that takes their bytes off the disk (`erased_by` in the report). Idempotent."""
        self._require_writable()
        user_id = validate_user_id(user_id)
        with self._write_lock:
            cur = self._cursor()
            try:
                cur.execute("BEGIN TRANSACTION")
                n_rows = cur.execute("DELETE FROM interactions WHERE user_id = ?", [user_id]).fetchall()[0][0]
                n_profiles = cur.execute("DELETE FROM profiles WHERE user_id = ?", [user_id]).fetchall()[0][0]
                due = self._mark_due(cur)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._index.drop(user_id)
            self._schedule(due)
        return ForgetReport(
            user_id=user_id, interactions=int(n_rows), vectors=int(n_rows), profiles=int(n_profiles), erased_by=due
        )

    def schedule_compaction(self) -> datetime | None:
        """Have the bytes of every row deleted so far (by the store or a component sharing its file) leave the
        disk within `compaction_delay_seconds`; returns that time (UTC), or None for an in-memory store."""
        with self.transaction() as cur:
            due = self._mark_due(cur)
        with self._write_lock:
            self._schedule(due)
        return due

    def _mark_due(self, cur: duckdb.DuckDBPyConnection) -> datetime | None:
        """Record, in the caller's transaction, that a compaction is due (the earliest due time wins)."""
        if not self._on_disk:
            return None
        due = _utcnow() + timedelta(seconds=self.settings.compaction_delay_seconds)
        if self._due is not None and self._due <= due:
            return self._due
        cur.execute("INSERT OR REPLACE INTO store_meta VALUES (?, ?)", [DUE_KEY, due.isoformat()])
        return due

    def _schedule(self, due: datetime | None) -> None:
        """Keep `due` as the pending compaction's deadline (the earliest wins) and have the timer fire then."""
        if due is None or (self._timer is not None and self._due is not None and self._due <= due):
            return
        self._due = due if self._due is None else min(self._due, due)
        self._start_timer(self._due)

    def _start_timer(self, at: datetime) -> None:
        self._cancel_timer()
        self._timer = threading.Timer(max(0.0, (at - _utcnow()).total_seconds()), self._on_timer)
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        with self._write_lock:
            if self._closed or self._due is None:
                return
            delay = self.settings.compaction_delay_seconds
            if self._shared():
                logger.info("%s: another store of this process holds the file; compaction in %s s", self.path, delay)
            else:
                try:
                    self.compact()
                    return
                except (StoreError, duckdb.Error, OSError):
                    logger.exception("%s: compaction failed; retrying in %s s", self.path, delay)
            self._start_timer(_utcnow() + timedelta(seconds=delay))

    @property
    def compaction_due(self) -> datetime | None:
        """When the pending compaction must have run (UTC), or None if no deleted bytes await one."""
        return self._due

    def compact(self) -> datetime:
        """Rewrite the database file now (see `stores.compaction`), so no byte of a deleted row is left in it.
        Writes wait for the whole rewrite; reads go on during the copy and wait only while the file is swapped
        and reopened. Returns when it finished (UTC)."""
        self._require_writable()
        with self._write_lock:
            if self._closed:
                raise StoreError("The memory store is closed.")
            if self._on_disk:
                with OPEN_FILES.lock:
                    self._refuse_if_shared()
                started = time.perf_counter()
                fresh = copy_live_rows(self._con, self.path)
                swapping = time.perf_counter()
                with OPEN_FILES.lock, self._gate.exclusive():
                    try:
                        self._refuse_if_shared()  # another store may have opened the file during the copy
                    except StoreError:
                        discard_leftovers(self.path)
                        raise
                    self._close_connection()
                    try:
                        move_into_place(fresh, self.path)
                    finally:
                        self._con = self._connect(False)
                        self._generation += 1
                self.compactions += 1
                done = time.perf_counter()
                logger.info("%s: compacted in %.3f s (reads paused %.3f s)", self.path, done - started, done - swapping)
            self._due = None
            self._cancel_timer()
            return _utcnow()

    def _refuse_if_shared(self) -> None:
        """Called with `OPEN_FILES.lock` held."""
        if OPEN_FILES.holders(self._key) > 1:
            raise StoreError(
                f"{self.path} is also open in another MemoryStore of this process (one DuckDB instance): "
                "it cannot be rewritten now; the last store to close it compacts it"
            )

    def rebuild_index(self, user_id: str | None = None) -> None:
        """Drop cached FAISS partitions (one user's or all); they are rebuilt from DuckDB on next search."""
        with self._write_lock:
            self._index.drop(None if user_id is None else validate_user_id(user_id))
