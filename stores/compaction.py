"""Rewriting the DuckDB file so deleted rows leave the disk, and the gate that lets it close the connection.

DuckDB keeps a deleted row's bytes in freed blocks, even after CHECKPOINT and VACUUM; a copy into a fresh
file holds only live rows. So a forget is followed by a compaction: copy the database into `<file>.compact`,
close the store's connection, move the copy over the file (`os.replace`, atomic) and reopen. A crash before
the move leaves the old file and its pending mark, so the next writable open compacts again.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from persona_agent.core.errors import StoreError

DUE_KEY = "compaction_due"
"""The `store_meta` row marking a pending compaction: the UTC time (ISO) by which it must have run."""


class ReadGate:
    """Many readers at once, or one compaction alone: a compaction closes the connection every thread's
    cursor belongs to, so it waits for the reads in flight and holds new ones until the file is reopened."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._exclusive = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True  # new readers wait from now on
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class OpenFiles:
    """The database files this process's stores hold open, by resolved path. DuckDB hands every connection to
    one file in a process the same database instance, so a compaction may swap the file only while its store
    is the file's one holder: another holder would keep the old (unlinked) file open, and the reopening store
    would be handed that instance back, losing every later write. `lock` is held while a store opens or
    closes its file and while a compaction swaps it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._holders: Counter[str] = Counter()

    def add(self, key: str) -> None:
        self._holders[key] += 1

    def remove(self, key: str) -> None:
        self._holders[key] -= 1
        if self._holders[key] <= 0:
            del self._holders[key]

    def holders(self, key: str) -> int:
        return self._holders[key]


OPEN_FILES = OpenFiles()


def fresh_path(path: Path) -> Path:
    return path.with_name(path.name + ".compact")


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def discard_leftovers(path: Path) -> None:
    """Remove a copy (and its WAL) a compaction that died before its move left behind. Only files that exist:
    on a read-only disk, unlinking a missing one fails (EROFS), and the open should fail on the database itself."""
    fresh = fresh_path(path)
    for leftover in (fresh, wal_path(fresh)):
        if leftover.exists():
            leftover.unlink(missing_ok=True)


def copy_live_rows(con: duckdb.DuckDBPyConnection, path: Path) -> Path:
    """Copy the database `con` has open into a fresh file beside `path`, without the pending mark; returns it.
    The caller holds the store's write lock, so nothing changes between the copy and the move."""
    fresh = fresh_path(path)
    discard_leftovers(path)
    con.execute("CHECKPOINT")
    name = con.execute("SELECT current_database()").fetchall()[0][0]
    quoted = str(fresh).replace("'", "''")
    con.execute(f"ATTACH '{quoted}' AS _compact")
    try:
        con.execute(f'COPY FROM DATABASE "{name.replace(chr(34), chr(34) * 2)}" TO _compact')
        con.execute("DELETE FROM _compact.store_meta WHERE key = ?", [DUE_KEY])
        con.execute("CHECKPOINT _compact")
    except BaseException:
        con.execute("DETACH _compact")
        discard_leftovers(path)
        raise
    con.execute("DETACH _compact")
    if wal_path(fresh).exists():  # DETACH checkpoints; a WAL left here would be lost by the move
        discard_leftovers(path)
        raise StoreError(f"the compacted copy of {path} kept a WAL; the store was left as it was")
    return fresh


def move_into_place(fresh: Path, path: Path) -> None:
    """Replace `path` by `fresh` once the store's connection is closed. The closed file was checkpointed under
    the write lock, so a WAL beside it holds nothing the copy lacks: it goes first (a WAL left beside the new
    file would be replayed into it)."""
    wal_path(path).unlink(missing_ok=True)
    os.replace(fresh, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
