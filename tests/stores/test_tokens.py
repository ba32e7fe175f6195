"""Token revocation times in DuckDB: kept across reopening, keyed by a hash (no raw user id), never moved back,
and the in-memory cache always agrees with the table."""

from __future__ import annotations

import hashlib
import time

from persona_agent.stores import MemoryStore
from persona_agent.stores.tokens import TokenRevocations


def test_revocations_persist_under_a_hash_and_only_move_forward(tmp_path, embedder):
    path = tmp_path / "m.duckdb"
    with MemoryStore(path, embedder=embedder) as store:
        revocations = TokenRevocations(store)
        assert revocations.revoked_at("alice") is None and revocations.cached("alice")  # a miss is cached too
        before = time.time()
        first = revocations.revoke("alice")  # the cached None must not survive the revoke
        assert before <= first <= time.time() + 1e-6 and revocations.revoked_at("alice") == first
        second = revocations.revoke("alice")
        assert second >= first and revocations.revoked_at("alice") == second
        rows = store.cursor().execute("SELECT user_hash, revoked_at FROM token_revocations").fetchall()
        assert rows == [(hashlib.sha256(b"alice").hexdigest(), second)]
    with MemoryStore(path, embedder=embedder) as store:
        revocations = TokenRevocations(store)
        assert not revocations.cached("alice")
        assert revocations.revoked_at("alice") == second and revocations.revoked_at("bob") is None


def test_the_cache_is_bounded(tmp_path, embedder):
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as store:
        revocations = TokenRevocations(store, cache_size=2)
        at = revocations.revoke("alice")
        revocations.revoked_at("bob")
        revocations.revoked_at("carol")
        assert not revocations.cached("alice") and revocations.cached("carol")
        assert revocations.revoked_at("alice") == at  # read again from DuckDB
