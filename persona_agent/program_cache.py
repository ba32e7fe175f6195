"""An LRU of ready persona programs keyed by (user, version), and each user's live version.

Versions are immutable, so a cached program never goes stale; the live pointer does, and every change of it
(promote, rollback, forget) drops the user's entries. One process owns the DuckDB file (one writer), so
every such change passes through this process and its cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from persona_agent.core.errors import InvalidInputError
from persona_agent.programs.persona_agent import PersonaAgent


class ProgramCache:
    """Thread-safe LRU of `PersonaAgent`s (shared instances: treat them as read-only)."""

    def __init__(self, maxsize: int = 1024) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise InvalidInputError("maxsize", maxsize, "must be a positive integer")
        self.maxsize = maxsize
        self._programs: OrderedDict[tuple[str, int], PersonaAgent] = OrderedDict()
        self._live: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, user_id: str, version: int) -> PersonaAgent | None:
        with self._lock:
            agent = self._programs.get((user_id, version))
            if agent is None:
                self.misses += 1
                return None
            self._programs.move_to_end((user_id, version))
            self.hits += 1
            return agent

    def put(self, user_id: str, version: int, agent: PersonaAgent) -> PersonaAgent:
        """Cache `agent` unless another thread cached this key first; returns the cached one."""
        with self._lock:
            agent = self._programs.setdefault((user_id, version), agent)
            self._programs.move_to_end((user_id, version))
            while len(self._programs) > self.maxsize:
                self._programs.popitem(last=False)
            return agent

    def live(self, user_id: str) -> int | None:
        with self._lock:
            return self._live.get(user_id)

    def set_live(self, user_id: str, version: int) -> None:
        with self._lock:
            self._live[user_id] = version

    def invalidate(self, user_id: str) -> int:
        """Drop the user's programs and live pointer; returns how many programs were dropped."""
        with self._lock:
            keys = [key for key in self._programs if key[0] == user_id]
            for key in keys:
                del self._programs[key]
            self._live.pop(user_id, None)
            return len(keys)

    forget = invalidate

    def users(self) -> set[str]:
        with self._lock:
            return {user for user, _ in self._programs} | set(self._live)

    def clear(self) -> None:
        with self._lock:
            self._programs.clear()
            self._live.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._programs)
