"""Compaction: after a forget the store's file is rewritten so no byte of the user is left, while readers on
other threads carry on, and a compaction a killed process owed is run by the next writable open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from persona_agent.core.config import Settings
from persona_agent.core.errors import StoreError
from persona_agent.stores import MemoryStore
from persona_agent.stores.compaction import fresh_path

MARK, KEEP = "zz9forgetme", "kk4keepme"
DIM = 384


def _vectors(n: int, seed: int) -> np.ndarray:
    vecs = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def _fill(store: MemoryStore, n: int = 200, keep: int | None = None) -> None:
    for user, mark in ((MARK, MARK), (KEEP, KEEP)):
        n = keep if keep is not None and user == KEEP else n
        items = [{"query": f"row {i} of {mark}", "response": f"answer {mark}"} for i in range(n)]
        store.add(user, items, embeddings=_vectors(n, len(user)))


def _copies(folder, needle: str) -> int:
    return sum(p.read_bytes().count(needle.encode()) for p in folder.rglob("*") if p.is_file())


def test_compaction_removes_deleted_bytes_and_readers_never_fail(tmp_path, embedder):
    store = MemoryStore(tmp_path / "m.duckdb", embedder=embedder, settings=Settings(compaction_delay_seconds=3600))
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop(step) -> None:
        while not stop.is_set():
            try:
                step()
            except BaseException as exc:  # any failure of a reader fails the test
                errors.append(exc)
                return

    def read() -> None:  # every kind of read, on its own thread's cursor, across the compactions
        assert store.count(KEEP) == 5000
        assert len(store.history(KEEP)) == 5000 and len(store.latest(KEEP, 3)) == 3
        assert len(store.search(KEEP, vector=_vectors(1, 7)[0], k=5)) == 5
        assert KEEP in store.users()
        store.rebuild_index(KEEP)  # the next search reloads the partition from DuckDB

    def scan() -> None:  # a long statement: most of its time inside DuckDB, where a closed cursor would fail
        assert store.query("SELECT count(*) FROM interactions, range(100)")[0][0] in (500_000, 520_000)

    try:
        _fill(store, keep=5000)
        assert _copies(tmp_path, MARK) > 0
        readers = [threading.Thread(target=loop, args=(step,)) for step in (read, scan, scan)]
        for t in readers:
            t.start()
        report = store.forget(MARK)
        assert report.interactions == 200 and report.erased_by == store.compaction_due
        for _ in range(10):
            store.compact()
        stop.set()
        for t in readers:
            t.join()
        assert errors == []
        assert store.compactions == 10 and store.compaction_due is None
        assert _copies(tmp_path, MARK) == 0 and _copies(tmp_path, KEEP) > 0
        store.add(KEEP, [{"query": "after"}], embeddings=_vectors(1, 3))
        assert store.count(KEEP) == 5001
    finally:
        stop.set()
        store.close()
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as again:
        assert again.count(KEEP) == 5001 and again.count(MARK) == 0 and again.compaction_due is None


def test_an_in_memory_store_has_no_file_to_compact(embedder):
    with MemoryStore(":memory:", embedder=embedder) as store:
        _fill(store, 3)
        assert store.forget(MARK).erased_by is None and store.compaction_due is None


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from persona_agent.core.config import Settings
    from persona_agent.stores import MemoryStore
    from tests.stores.test_compaction import MARK, _fill

    store = MemoryStore(sys.argv[1], settings=Settings(compaction_delay_seconds=3600))
    _fill(store)
    store.forget(MARK)
    os.kill(os.getpid(), signal.SIGKILL)  # dies owing the compaction
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_compaction_owed_by_a_killed_process_runs_on_the_next_open(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    fresh_path(path).write_bytes(b"a copy a dead compaction left")  # removed on open
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, str(path)],
        cwd=os.getcwd(),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _copies(tmp_path, MARK) > 0
    store = MemoryStore(path, embedder=embedder, settings=Settings(compaction_delay_seconds=3600))
    try:
        assert not fresh_path(path).exists()
        assert store.compaction_due is not None  # read back from the file, and its timer started
        assert store.count(MARK) == 0 and store.count(KEEP) == 200
    finally:
        store.close()
    assert _copies(tmp_path, MARK) == 0 and _copies(tmp_path, KEEP) > 0


def test_two_stores_of_one_process_on_one_file_never_lose_a_write(tmp_path, embedder):
    """DuckDB gives both stores one instance: a swap under the second would leave it (and the reopened first)
    on the old, unlinked file. The compaction waits for the last store to close instead."""
    path = tmp_path / "m.duckdb"
    settings = Settings(compaction_delay_seconds=3600)
    first = MemoryStore(path, embedder=embedder, settings=settings)
    second = MemoryStore(path, embedder=embedder, settings=settings)
    try:
        _fill(first, 5)
        first.forget(MARK)
        with pytest.raises(StoreError, match="also open in another MemoryStore"):
            first.compact()
        first.add(KEEP, [{"query": "written after the refused compaction"}], embeddings=_vectors(1, 5))
        first.close()  # not the last holder: the compaction stays pending in the file
        assert _copies(tmp_path, MARK) > 0
    finally:
        second.close()  # the last holder finds the pending compaction and runs it
    assert _copies(tmp_path, MARK) == 0
    with MemoryStore(path, embedder=embedder) as again:
        assert again.count(KEEP) == 6 and again.compaction_due is None
