"""Property: random interleaved adds, searches and forgets for several users never return another
user's row, never return a row at or after the `before=` cut-off, and counts stay exact."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from persona_agent.stores import MemoryStore

USERS = st.sampled_from(["ann", "bo", "cy"])
T0 = datetime(2024, 1, 1)


def unit_vectors(seed: int, n: int, dim: int = 384) -> np.ndarray:
    vecs = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


class StoreMachine(RuleBasedStateMachine):
    embedder = None  # set by the test below: the real MiniLM embedder, shared

    @initialize()
    def open_store(self) -> None:
        self.store = MemoryStore(":memory:", embedder=type(self).embedder)
        self.rows: dict[str, dict[str, datetime]] = {}  # the model: user -> {id: created_at}

    def teardown(self) -> None:
        self.store.close()

    @rule(user=USERS, n=st.integers(1, 6), day=st.integers(0, 30), seed=st.integers(0, 2**16))
    def add(self, user: str, n: int, day: int, seed: int) -> None:
        times = [T0 + timedelta(days=day, hours=i) for i in range(n)]
        items = [{"query": f"{user} item {day}.{i}", "created_at": t} for i, t in enumerate(times)]
        ids = self.store.add(user, items, embeddings=unit_vectors(seed, n))
        self.rows.setdefault(user, {}).update(zip(ids, times, strict=True))

    @precondition(lambda self: any(self.rows.values()))
    @rule(
        user=USERS,
        k=st.integers(1, 12),
        cutoff=st.none() | st.integers(0, 32),
        seed=st.integers(0, 2**16),
        by_text=st.booleans(),
    )
    def search(self, user: str, k: int, cutoff: int | None, seed: int, by_text: bool) -> None:
        mine = self.rows.get(user, {})
        if not mine:
            return
        before = None if cutoff is None else T0 + timedelta(days=cutoff)
        if by_text:
            hits = self.store.search(user, "an item", k=k, before=before)
        else:
            hits = self.store.search(user, vector=unit_vectors(seed, 1)[0], k=k, before=before)
        eligible = [i for i, t in mine.items() if before is None or t < before]
        assert len(hits) == min(k, len(eligible))
        for hit in hits:
            assert hit.interaction.user_id == user
            assert hit.interaction.id in mine
            assert before is None or hit.interaction.created_at < before
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)

    @rule(user=USERS)
    def forget(self, user: str) -> None:
        report = self.store.forget(user)
        assert report.interactions == len(self.rows.pop(user, {}))

    @invariant()
    def counts_are_exact(self) -> None:
        if not hasattr(self, "store"):
            return
        for user in ("ann", "bo", "cy"):
            assert self.store.count(user) == len(self.rows.get(user, {}))
        assert self.store.users() == sorted(u for u, r in self.rows.items() if r)


def test_store_isolation_property(embedder):
    StoreMachine.embedder = embedder
    test_case = StoreMachine.TestCase
    test_case.settings = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    test_case().runTest()
