"""A writer killed with SIGKILL in the middle of its batches: on reopen every batch is whole or absent,
and search agrees with DuckDB. Before the kill, the writer's own live FAISS partitions (cached before its first
batch, so every batch reaches them as an append, not a rebuild) must return every committed row: reopening
rebuilds the index from DuckDB and could not show a batch the live index missed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from persona_agent.stores import MemoryStore

BATCH = 2000
WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from persona_agent.core.errors import UnknownUserError
    from persona_agent.stores import MemoryStore

    store = MemoryStore(sys.argv[1])  # the default embedder name: its dimension comes from the store
    start = int(sys.argv[2])
    rng = np.random.default_rng(start)
    probe = np.ones(384, dtype=np.float32) / np.sqrt(384)
    for user in ("user0", "user1", "user2"):  # cache every partition now (an unknown user's too: empty)
        try:
            store.search(user, vector=probe, k=1)
        except UnknownUserError:
            pass
    for batch in range(start, start + 10_000):
        user = f"user{{batch % 3}}"
        vecs = rng.standard_normal(({batch_size}, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        items = [{{"query": f"row {{i}} of batch {{batch}}", "metadata": {{"batch": batch}}}} for i in range({batch_size})]
        assert store._index.get(user) is not None  # the live partition, which the add must extend
        store.add(user, items, embeddings=vecs)
        n = store.count(user)
        live = {{h.interaction.id for h in store.search(user, vector=probe, k=n)}}
        db = {{row[0] for row in store.query("SELECT id FROM interactions WHERE user_id = ?", [user])}}
        print(batch, int(len(live) == n and live == db), flush=True)
    """
).format(batch_size=BATCH)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_mid_batch_leaves_whole_batches(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    MemoryStore(path, embedder=embedder).close()  # create the schema (and record the embedder)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    committed: list[int] = []
    live_ok: list[int] = []
    for round_, delay in enumerate((0.013, 0.037, 0.071)):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(round_ * 10_000)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        for _ in range(3):  # let it commit a few batches, then kill it at an arbitrary point
            batch, ok = map(int, proc.stdout.readline().split())
            committed.append(batch)
            live_ok.append(ok)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for line in proc.stdout.read().splitlines():  # batches reported between the reads and the kill
            batch, ok = map(int, line.split())
            committed.append(batch)
            live_ok.append(ok)

    assert live_ok and all(live_ok), live_ok  # the live index held every committed row before the kill
    with MemoryStore(path, embedder=embedder) as store:
        con = store._cursor()
        sizes = con.execute(
            "SELECT json_extract(metadata, '$.batch')::INT AS b, count(*) FROM interactions GROUP BY b"
        ).fetchall()
        assert sizes, "nothing was committed"
        assert all(n == BATCH for _, n in sizes), sizes
        assert set(committed) <= {b for b, _ in sizes}
        for user in store.users():
            n = store.count(user)
            hits = store.search(user, vector=np.ones(384, dtype=np.float32) / np.sqrt(384), k=n)
            assert len(hits) == n
            assert {h.interaction.user_id for h in hits} == {user}
            db_ids = {r[0] for r in con.execute("SELECT id FROM interactions WHERE user_id = ?", [user]).fetchall()}
            assert {h.interaction.id for h in hits} == db_ids
