"""One DuckDB file as a store holds it: a connection shared by the store's threads, a cursor per thread (a DuckDB
connection is not thread-safe), writes serialised by one lock, and the swap a compaction makes of the file.

Reads outside the write lock go through `query`, which holds the read gate shared, so a compaction can close the
connection every cursor belongs to (see `stores.compaction`) without pulling it from under a read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from persona_agent.core.errors import StoreError
from persona_agent.stores.compaction import OPEN_FILES, ReadGate, discard_leftovers, move_into_place


def open_failure(path: Path, exc: duckdb.Error) -> str:
    """What went wrong opening `path`, and what to do: DuckDB's own text names neither the likely holder of a
    lock (a running service) nor the way out of a file that is not a database."""
    detail = str(exc)
    if "Could not set lock" in detail:
        holder = detail.partition("Conflicting lock is held in ")[2].partition(". See also")[0]
        return (
            f"{path} is held by another process{', ' + holder if holder else ''}: DuckDB lets one process open a "
            "database file for writing. Stop that process (e.g. a running `persona-agent serve`) or send the request "
            "to it, then retry."
        )
    if "not a valid DuckDB database" in detail:
        return (
            f"{path} is not a valid DuckDB database (empty or another kind of file); it was left as it is. Move it "
            "aside for a new store there, or set PERSONA_AGENT_DB_PATH (or PERSONA_AGENT_HOME) to another file."
        )
    return f"Cannot open the memory store at {path}: {detail}"


class StoreConnection:
    """The DuckDB file at `path` (":memory:" for a throwaway one), opened read-write or `read_only`."""

    def __init__(self, path: Path, *, read_only: bool) -> None:
        self.path = path
        self.read_only = read_only
        self.on_disk = str(path) != ":memory:"
        self.key = str(path.resolve()) if self.on_disk else ""  # this file in `OPEN_FILES`
        with OPEN_FILES.lock:
            if self.on_disk and not read_only:
                self._prepare_folder(not OPEN_FILES.holders(self.key))
            self.raw = self._connect(read_only)
            if self.on_disk:
                OPEN_FILES.add(self.key)
        self.write_lock = threading.RLock()
        self.gate = ReadGate()  # reads not under the write lock hold it shared; a compaction alone
        self.closed = False
        self._local = threading.local()
        self._generation = 0  # bumped when a compaction reopens the file: cursors of older ones are closed
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()

    def _prepare_folder(self, first_holder: bool) -> None:
        """Make the file's folder and, for the first holder, remove a dead compaction's copy. A home that is a
        regular file, or a read-only disk, is a `StoreError` naming the path, not a raw OSError."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if first_holder:
                discard_leftovers(self.path)
        except OSError as exc:
            raise StoreError(
                f"Cannot prepare the memory store at {self.path}: {exc}. Set PERSONA_AGENT_HOME (or "
                "PERSONA_AGENT_DB_PATH) to a writable folder."
            ) from exc

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            raise StoreError(open_failure(self.path, exc)) from exc

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor private to the calling thread, on the current connection. Use it under the write lock or the
        read gate (`query`): a compaction closes it."""
        if self.closed:
            raise StoreError("The memory store is closed.")
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == self._generation:
            return held[1]
        cur = self.raw.cursor()
        self._local.held = (self._generation, cur)
        with self._cursors_lock:
            self._cursors.append(cur)
        return cur

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple]:
        """All rows of one read statement, safe against a concurrent compaction."""
        with self.gate.shared():
            return self.cursor().execute(sql, params or []).fetchall()

    def one(self, sql: str, params: list[Any] | None = None) -> tuple | None:
        """The first row of a query, or None. (DuckDB 2 wants every result read to the end.)"""
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def require_writable(self) -> None:
        if self.read_only:
            raise StoreError("This memory store was opened read-only.")

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One DuckDB transaction under the write lock; rolled back if the block raises."""
        self.require_writable()
        with self.write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def shared(self) -> bool:
        """Whether another store of this process holds the file too."""
        with OPEN_FILES.lock:
            return OPEN_FILES.holders(self.key) > 1

    def refuse_if_shared(self) -> None:
        """Refuse a rewrite while another store of this process holds the file. Call with `OPEN_FILES.lock` held."""
        if OPEN_FILES.holders(self.key) > 1:
            raise StoreError(
                f"{self.path} is also open in another MemoryStore of this process (one DuckDB instance): "
                "it cannot be rewritten now; the last store to close it compacts it"
            )

    def swap_in(self, fresh: Path) -> None:
        """Replace the file by `fresh` (its compacted copy) and reopen it, reads held off meanwhile. The caller
        holds the write lock, so nothing was written since the copy."""
        with OPEN_FILES.lock, self.gate.exclusive():
            try:
                self.refuse_if_shared()  # another store may have opened the file during the copy
            except StoreError:
                discard_leftovers(self.path)
                raise
            self._close_connection()
            try:
                move_into_place(fresh, self.path)
            finally:
                self.raw = self._connect(False)
                self._generation += 1

    def close(self) -> None:
        """Close every cursor and the connection, once the reads in flight are done."""
        with OPEN_FILES.lock, self.gate.exclusive():
            self.closed = True
            self._close_connection()
            if self.on_disk:
                OPEN_FILES.remove(self.key)

    def abandon(self) -> None:
        """Close right after opening, when setting the store up failed (no cursor exists yet)."""
        with OPEN_FILES.lock:
            self.raw.close()
            if self.on_disk:
                OPEN_FILES.remove(self.key)

    def _close_connection(self) -> None:
        with self._cursors_lock:
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()
        self.raw.close()
