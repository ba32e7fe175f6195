"""Token revocation: per user, a time at or before which every user token issued is dead.

The service's user tokens are signed claims checked without storage (`persona_agent.service.auth`); revoking
them needs one stored fact per user, the revocation time. `forget` and the admin route
`POST /v1/users/{id}/tokens/revoke` move it to now: every token issued until then is refused, a token minted
afterwards works. Rows are keyed by the SHA-256 of the user id, so a forgotten user leaves no raw id here (a
pseudonym: a guessable id can be hashed again, which is all a revocation check needs).

The service checks a token on every request, so lookups are cached in memory (a bounded LRU, keyed by the same
hash). This object is the table's only writer in its process (DuckDB allows one writing process per file), so
the cache never goes stale.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict

from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.validation import validate_user_id


def user_hash(user_id: str) -> str:
    """The key of a user's row: hex SHA-256 of the id."""
    return hashlib.sha256(validate_user_id(user_id).encode()).hexdigest()


class TokenRevocations:
    """Revocation times of user tokens, in the memory store's DuckDB file. Thread-safe."""

    def __init__(self, store: MemoryStore, *, cache_size: int = 100_000) -> None:
        self.store = store
        self._cache: OrderedDict[str, float | None] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # one lock for the cache and its fills: a fill never overwrites a revoke

    def _remember(self, key: str, value: float | None) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def cached(self, user_id: str) -> bool:
        """Whether `revoked_at(user_id)` answers from memory (no DuckDB read): the event loop's fast path."""
        with self._lock:
            return user_hash(user_id) in self._cache

    def revoked_at(self, user_id: str) -> float | None:
        """Epoch seconds at or before which the user's tokens are dead; None if never revoked."""
        key = user_hash(user_id)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            rows = self.store.query("SELECT revoked_at FROM token_revocations WHERE user_hash = ?", [key])
            value = float(rows[0][0]) if rows else None
            self._remember(key, value)
            return value

    def revoke(self, user_id: str) -> float:
        """Kill every token of the user issued until now; returns the revocation time (it never moves back).
        Rounded up to the microsecond, as token issue times are rounded down."""
        key = user_hash(user_id)
        now = math.ceil(time.time() * 1e6) / 1e6
        with self._lock:
            with self.store.transaction() as cur:
                cur.execute(
                    "INSERT INTO token_revocations VALUES (?, ?) ON CONFLICT (user_hash) DO UPDATE "
                    "SET revoked_at = greatest(token_revocations.revoked_at, excluded.revoked_at)",
                    [key, now],
                )
                value = float(
                    cur.execute("SELECT revoked_at FROM token_revocations WHERE user_hash = ?", [key]).fetchall()[0][0]
                )
            self._remember(key, value)
        return value
