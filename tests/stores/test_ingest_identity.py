"""Ingest identity and atomicity in the store (issue 37 point 5): a row is (user, time as given, query,
response); repeats are skipped and counted, a call is one transaction, and the FAISS partitions change only
after the commit. Real DuckDB, FAISS and MiniLM."""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import numpy as np
import pytest

from persona_agent.stores import MemoryStore
from persona_agent.stores.rows import content_hash
from persona_agent.stores.schema import SCHEMA_VERSION

T0 = datetime(2024, 1, 1)


@pytest.fixture
def store(tmp_path, embedder):
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as s:
        yield s


def rows(n: int, user: str = "alice", dated: bool = True) -> list[tuple[str, dict]]:
    return [
        (
            user,
            {"query": f"question {i}", "response": "ok", **({"created_at": T0 + timedelta(hours=i)} if dated else {})},
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("dated", [True, False])
def test_ingesting_the_same_records_again_adds_nothing_and_counts_them(store, dated):
    first = store.ingest(rows(5, dated=dated))
    assert (first.added, first.skipped) == (5, 0)
    again = store.ingest(rows(5, dated=dated) + rows(2, "bob", dated=dated))
    assert (again.added, again.skipped) == (2, 5)
    assert again.ids[:5] == first.ids  # a repeat answers with the stored row's id
    assert store.count("alice") == 5 and store.count("bob") == 2
    assert store.add("alice", [item for _, item in rows(5, dated=dated)]) == list(first.ids)


def test_repeats_within_one_call_are_skipped_too(store):
    report = store.ingest(rows(3) + rows(3) + rows(1))
    assert (report.added, report.skipped) == (3, 4)
    assert report.ids[3:6] == report.ids[:3] and len(set(report.ids)) == 3
    assert store.count() == 3


def test_identity_is_user_time_query_response(store):
    item = {"query": "q", "response": "r", "created_at": T0}
    store.add("alice", [item])
    assert store.add("alice", [{**item, "created_at": T0.timestamp() + 0}]) == store.add(
        "alice", [item]
    )  # same instant
    store.add("bob", [item])  # another user
    store.add("alice", [{**item, "created_at": T0 + timedelta(microseconds=1)}])  # another time
    store.add("alice", [{**item, "response": "r2"}])  # another response
    store.add("alice", [{"query": "q", "response": "r"}])  # no time: a row of its own, identified by content
    store.add("alice", [{"query": "q", "response": "r"}])
    assert store.count("alice") == 4 and store.count("bob") == 1


def test_interactions_the_system_records_stay_distinct(store):
    """The agent's own records (add_interaction: answers, feedback) carry their time, so a repeated question
    is a new row, while a client's undated item is identified by its content."""
    a = store.add_interaction("alice", "same question", "same answer")
    b = store.add_interaction("alice", "same question", "same answer")
    assert a != b and store.count("alice") == 2


def test_an_interrupted_ingest_writes_nothing_and_leaves_the_live_index_alone(store):
    store.ingest(rows(4))
    vector = store.embedder.encode(["question 1"])[0]
    before = [h.interaction.id for h in store.search("alice", vector=vector, k=10)]  # the partition is now cached
    batches: list[int] = []

    def interrupt(n: int) -> None:
        batches.append(n)
        if len(batches) == 3:  # after the first batch of 8 new rows was inserted (in the open transaction)
            raise KeyboardInterrupt

    new = rows(4) + [("alice", {"query": f"new question {i}", "created_at": T0 - timedelta(days=i)}) for i in range(30)]
    with pytest.raises(KeyboardInterrupt):
        store.ingest(new, batch_size=8, progress=interrupt)
    assert batches == [0, 4, 8]  # repeats in the call, repeats of stored rows, one batch
    assert store.count() == 4
    assert [h.interaction.id for h in store.search("alice", vector=vector, k=10)] == before

    report = store.ingest(new, batch_size=8)
    assert (report.added, report.skipped) == (30, 4) and store.count() == 34
    live = store.search("alice", vector=vector, k=50)  # the cached partition, extended after the commit
    assert {h.interaction.id for h in live} == {
        r[0] for r in store.cursor().execute("SELECT id FROM interactions").fetchall()
    }
    earlier = store.search("alice", vector=vector, k=50, before=T0)  # time order kept for the cut-off
    assert len(earlier) == 29 and all(h.interaction.created_at < T0 for h in earlier)


def test_a_store_from_before_identities_is_backfilled_on_open(tmp_path, embedder):
    path = tmp_path / "old.duckdb"
    with MemoryStore(path, embedder=embedder) as store:
        store.ingest(rows(3) + rows(2, dated=False))
    con = duckdb.connect(str(path))  # make it look like a schema-2 database
    con.execute("ALTER TABLE interactions DROP COLUMN content_hash")
    con.execute("DROP TABLE token_revocations")  # made by migration 4, which runs again
    con.execute("DELETE FROM schema_version WHERE version > 2")
    con.close()
    with MemoryStore(path, embedder=embedder) as store:
        cur = store.cursor()
        assert cur.execute("SELECT max(version) FROM schema_version").fetchall()[0][0] == SCHEMA_VERSION
        for user, when, query, response, digest in cur.execute(
            "SELECT user_id, created_at, query, response, content_hash FROM interactions"
        ).fetchall():
            assert digest == content_hash(user, when, query, response)  # SQL and Python agree
        report = store.ingest(rows(3))  # dated rows are recognised; undated old ones carry their stored time
        assert (report.added, report.skipped) == (0, 3)
        with pytest.raises(duckdb.ConstraintException):  # no default: every insert must give the hash
            cur.execute(
                "INSERT INTO interactions (id, seq, user_id, created_at, query, response, metadata, embedding) "
                "SELECT 'x', 99, 'u', now()::TIMESTAMP, 'q', '', '{}', embedding FROM interactions LIMIT 1"
            )


def test_given_embeddings_follow_their_records_past_skipped_ones(store):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((4, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    store.ingest(rows(2), embeddings=vectors[:2])
    store.ingest(rows(4), embeddings=vectors)  # the first two are skipped; the others keep their own vectors
    for i in (2, 3):
        hit = store.search("alice", vector=vectors[i], k=1)[0]
        assert hit.interaction.query == f"question {i}" and hit.score == pytest.approx(1.0, abs=1e-5)
