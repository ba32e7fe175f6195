"""The memory store against real DuckDB, real FAISS and the real MiniLM embedder."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import duckdb
import numpy as np
import pytest

from persona_agent.core.errors import (
    EmbeddingDimensionError,
    InvalidInputError,
    InvalidUserIdError,
    SchemaVersionError,
    StoreError,
    UnknownUserError,
)
from persona_agent.stores import MemoryStore, NewInteraction
from persona_agent.stores.validation import MAX_JSON_DEPTH

T0 = datetime(2020, 1, 1)
DEEP: list = []
for _ in range(5000):  # deeper than Python's recursion limit: json.dumps raised RecursionError
    DEEP = [DEEP]

FILMS = [
    ("A crew travels through a wormhole to save humanity", "sci-fi"),
    ("Two strangers fall in love on a night train across Europe", "romance"),
    ("A detective hunts a serial killer in a rainy city", "violence"),
    ("Robots rebel against their makers on a distant planet", "sci-fi"),
    ("A stand-up comedian's disastrous road trip", "comedy"),
]


@pytest.fixture
def store(tmp_path, embedder):
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as s:
        yield s


def add_films(store: MemoryStore, user: str, start: datetime = T0) -> list[str]:
    items = [
        {"query": q, "response": r, "task": "tagging", "created_at": start + timedelta(days=i)}
        for i, (q, r) in enumerate(FILMS)
    ]
    return store.add(user, items)


def test_search_ranks_by_meaning_and_returns_exactly_k(store):
    add_films(store, "alice")
    hits = store.search("alice", "an astronaut lost in outer space", k=3)
    assert [h.rank for h in hits] == [0, 1, 2]
    assert hits[0].interaction.response == "sci-fi"
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert len(store.search("alice", "anything", k=5)) == 5
    assert len(store.search("alice", "anything", k=50)) == 5


def test_users_never_see_each_other(store):
    alice = set(add_films(store, "alice"))
    bob = set(add_films(store, "bob"))
    for k in (1, 5, 10):
        assert {h.interaction.id for h in store.search("alice", "space", k=k)} <= alice
        assert {h.interaction.id for h in store.search("bob", "space", k=k)} <= bob
    with pytest.raises(InvalidInputError):
        store.get("alice", next(iter(bob)))


def test_before_cutoff_and_task_filter(store):
    add_films(store, "alice")
    cutoff = T0 + timedelta(days=2)  # rows on day 0 and 1 are strictly earlier
    hits = store.search("alice", "robots in space", k=5, before=cutoff)
    assert len(hits) == 2
    assert all(h.interaction.created_at < cutoff for h in hits)
    store.add_interaction("alice", "note: prefers short answers", task="note", created_at=T0 - timedelta(days=1))
    notes = store.search("alice", "space", k=5, task="note")
    assert [h.interaction.task for h in notes] == ["note"]
    # An out-of-order append (earlier than rows already indexed) still respects the cut-off.
    early = store.search("alice", "robots", k=5, before=T0 + timedelta(hours=1))
    assert {h.interaction.query for h in early} == {"note: prefers short answers", FILMS[0][0]}
    assert [i.created_at for i in store.latest("alice", 2, before=cutoff)] == [T0, T0 + timedelta(days=1)]


def test_timezones_are_normalised_to_utc(store):
    paris = timezone(timedelta(hours=1))
    store.add("alice", [{"query": "hello there", "created_at": datetime(2020, 1, 1, 12, tzinfo=paris)}])
    assert store.latest("alice", 1)[0].created_at == datetime(2020, 1, 1, 11)
    assert store.search("alice", "hello", k=1, before=datetime(2020, 1, 1, 11, 30, tzinfo=UTC))


def test_persistence_across_reopen(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    with MemoryStore(path, embedder=embedder) as s:
        ids = add_films(s, "alice")
        s.search("alice", "space", k=2)  # builds the partition before more rows arrive
        s.add_interaction("alice", "A space station drama", response="sci-fi")
        profile = s.set_profile("alice", "Likes science fiction.", source_ids=ids[:2])
    with MemoryStore(path, embedder=embedder) as s:
        assert s.count("alice") == 6
        assert s.get_profile("alice") == profile
        assert s.get("alice", ids[0]).query == FILMS[0][0]
        top = s.search("alice", "a space station", k=1)[0]
        assert top.interaction.query == "A space station drama"
        assert s.add("alice", [{"query": "one more"}])  # seq continues after reopen
        assert [i.query for i in s.latest("alice", 1)] == ["one more"]


def test_profiles_are_versioned(store):
    assert store.get_profile("alice") is None
    first = store.set_profile("alice", "v1 text")
    second = store.set_profile("alice", "v2 text", source_ids=["mem_x"])
    assert (first.version, second.version) == (1, 2)
    assert store.get_profile("alice").text == "v2 text"
    assert store.get_profile("alice", version=1).text == "v1 text"


def test_forget_removes_rows_vectors_and_profiles(store):
    add_films(store, "alice")
    add_films(store, "bob")
    store.search("alice", "space", k=2)  # partition cached
    store.set_profile("alice", "Likes science fiction.")
    report = store.forget("alice")
    assert (report.interactions, report.vectors, report.profiles) == (5, 5, 1)
    assert store.count("alice") == 0
    assert store.get_profile("alice") is None
    assert "alice" not in store.users()
    with pytest.raises(UnknownUserError):
        store.search("alice", "space", k=5)
    assert store.forget("alice").total == 0  # idempotent
    assert len(store.search("bob", "space", k=5)) == 5
    # Re-adding after forget starts clean: nothing of the old rows resurfaces.
    store.add_interaction("alice", "fresh start")
    assert [h.interaction.query for h in store.search("alice", "space", k=5)] == ["fresh start"]


def _snapshot(store: MemoryStore) -> tuple:
    con = store._cursor()
    return (
        con.execute("SELECT count(*) FROM interactions").fetchall(),
        con.execute("SELECT count(*) FROM profiles").fetchall(),
    )


@pytest.mark.parametrize(
    ("call", "error", "field"),
    [
        (lambda s: s.add("", [{"query": "q"}]), InvalidUserIdError, "user_id"),
        (lambda s: s.add("has space", [{"query": "q"}]), InvalidUserIdError, "user_id"),
        (lambda s: s.add("tab\tuser", [{"query": "q"}]), InvalidUserIdError, "user_id"),
        (lambda s: s.add("ctrl\x00user", [{"query": "q"}]), InvalidUserIdError, "user_id"),
        (lambda s: s.add("u" * 129, [{"query": "q"}]), InvalidUserIdError, "user_id"),
        (lambda s: s.add(7, [{"query": "q"}]), InvalidUserIdError, "user_id"),
        (lambda s: s.add("alice", [{"query": "ok"}, {"query": "   "}]), InvalidInputError, "items[1].query"),
        (lambda s: s.add("alice", [{"query": "x" * 20_001}]), InvalidInputError, "items[0].query"),
        (lambda s: s.add("alice", [{"query": "q", "color": "red"}]), InvalidInputError, "items[0].color"),
        (
            lambda s: s.add("alice", [{"query": "q", "metadata": {"f": float("nan")}}]),
            InvalidInputError,
            "items[0].metadata.f",
        ),
        (
            lambda s: s.add("alice", [{"query": "q", "created_at": "yesterday"}]),
            InvalidInputError,
            "items[0].created_at",
        ),
        (lambda s: s.add("alice", {"query": "q"}), InvalidInputError, "items"),
        (lambda s: s.add("alice", [{"query": "q"}], embeddings=np.ones((1, 5))), EmbeddingDimensionError, "embeddings"),
        (lambda s: s.add("alice", [{"query": "q"}] * 2, embeddings=np.ones((1, 384))), InvalidInputError, "embeddings"),
        (lambda s: s.search("alice", vector=np.ones(7)), EmbeddingDimensionError, "vector"),
        (lambda s: s.search("alice", "q", k=0), InvalidInputError, "k"),
        (lambda s: s.search("alice", "q", vector=np.ones(384)), InvalidInputError, "query"),
        (lambda s: s.search("alice", ""), InvalidInputError, "query"),
        (lambda s: s.search("alice", "q", before="soon"), InvalidInputError, "before"),
        (lambda s: s.set_profile("alice", ""), InvalidInputError, "text"),
        (lambda s: s.set_profile("alice", "p", source_ids="mem_1"), InvalidInputError, "source_ids"),
        (lambda s: s.latest("alice", 0), InvalidInputError, "n"),
        # issue 37 point 6: each was a 500 / untyped error, stored wrongly, or named another field
        (lambda s: s.add("alice", [{"query": "q", "created_at": 1e20}]), InvalidInputError, "items[0].created_at"),
        (lambda s: s.add("alice", [{"query": "q", "created_at": -1e13}]), InvalidInputError, "items[0].created_at"),
        (
            lambda s: s.add("alice", [{"query": "q", "created_at": "0001-01-01T00:00:00+05:00"}]),
            InvalidInputError,
            "items[0].created_at",
        ),
        (lambda s: s.add("alice", [{"query": "q", "created_at": True}]), InvalidInputError, "items[0].created_at"),
        (lambda s: s.add("alice", [{"query": "a\ud800"}]), InvalidInputError, "items[0].query"),
        (lambda s: s.add("alice", [{"query": "q", "response": "\udc00"}]), InvalidInputError, "items[0].response"),
        (lambda s: s.add("alice", [{"query": "q", "task": "t\ud800"}]), InvalidInputError, "items[0].task"),
        (
            lambda s: s.add("alice", [{"query": "q", "metadata": {"k": "\ud800"}}]),
            InvalidInputError,
            "items[0].metadata.k",
        ),
        (lambda s: s.add("alice", [{"query": "nul\x00"}]), InvalidInputError, "items[0].query"),
        (
            lambda s: s.add("alice", [{"query": "q", "metadata": {"x": DEEP}}]),
            InvalidInputError,
            "items[0].metadata.x" + ".0" * (MAX_JSON_DEPTH - 1),
        ),
        (lambda s: s.search("alice", "q", before=1e20), InvalidInputError, "before"),
        (lambda s: s.get("alice", "mem\x00"), InvalidInputError, "interaction_id"),
        (lambda s: s.ingest([("alice",)]), InvalidInputError, "records[0]"),
        (lambda s: s.set_profile("alice", "p\ud800"), InvalidInputError, "text"),
        (lambda s: s.get_profile("alice", 2**200), InvalidInputError, "version"),
    ],
)
def test_bad_input_raises_typed_error_and_changes_nothing(store, call, error, field):
    add_films(store, "alice")
    before = _snapshot(store)
    with pytest.raises(error) as info:
        call(store)
    assert info.value.field == field
    assert field.split("[")[0] in str(info.value)
    assert _snapshot(store) == before


def test_unknown_user(store):
    with pytest.raises(UnknownUserError, match="nobody"):
        store.search("nobody", "q")
    with pytest.raises(UnknownUserError):
        store.latest("nobody", 3)
    assert store.count("nobody") == 0


def test_store_refuses_another_embedding_dimension(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    MemoryStore(path, embedder=embedder).close()

    class Wide:
        name, dim = "wide-model", 512

        def encode(self, texts):  # pragma: no cover - never reached
            raise AssertionError

    with pytest.raises(StoreError, match="384-d"):
        MemoryStore(path, embedder=Wide())


def test_store_refuses_a_newer_schema(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    MemoryStore(path, embedder=embedder).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (99, now()::TIMESTAMP)")
    con.close()
    with pytest.raises(SchemaVersionError, match="99"):
        MemoryStore(path, embedder=embedder)


def test_read_only_store(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    with MemoryStore(path, embedder=embedder) as s:
        add_films(s, "alice")
    with MemoryStore(path, embedder=embedder, read_only=True) as s:
        assert len(s.search("alice", "space", k=2)) == 2
        with pytest.raises(StoreError, match="read-only"):
            s.add_interaction("alice", "nope")


def test_threads_write_and_search_concurrently(store):
    users = [f"user-{i}" for i in range(4)]
    errors: list[BaseException] = []

    def work(user: str) -> None:
        rng = np.random.default_rng(len(user) + users.index(user))
        try:
            mine: set[str] = set()
            for round_ in range(10):
                vecs = rng.standard_normal((8, 384)).astype(np.float32)
                vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
                items = [NewInteraction(query=f"{user} row {round_}.{i}") for i in range(8)]
                mine.update(store.add(user, items, embeddings=vecs))
                hits = store.search(user, vector=vecs[0], k=5)
                assert {h.interaction.id for h in hits} <= mine
                assert len(hits) == 5
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [store.count(u) for u in users] == [80] * 4


def test_search_leaves_torch_threads_alone(store):
    """FAISS and torch share one OpenMP setting: a search must not leave the encoder on one thread."""
    import torch

    add_films(store, "alice")
    before = torch.get_num_threads()
    store.search("alice", "space", k=3)
    assert torch.get_num_threads() == before
