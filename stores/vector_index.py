"""Per-user FAISS partitions over the vectors DuckDB holds.

Each user gets an exact inner-product index of their own rows only, so a search can never see another
user's rows and always returns k hits when the user has k eligible rows (no search-all-then-filter).
Partitions are built lazily from DuckDB, the source of truth, and dropped or rebuilt at will.
Rows are kept in time order when they arrive in time order, which makes a `before=` cut-off a
contiguous range of positions; an out-of-order append falls back to an explicit position list.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import faiss
import numpy as np


@dataclass
class UserPartition:
    """One user's rows: FAISS position i holds `rows[i]` (the row's stored fields, id first), with time
    `times[i]` (UTC microseconds) and task `tasks[i]`. Keeping the fields here lets a search answer
    without a DuckDB round-trip; DuckDB still holds the truth and the partition can be rebuilt from it."""

    dim: int
    rows: list[tuple] = field(default_factory=list)
    times: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    tasks: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    time_sorted: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict = field(default_factory=dict)  # row id -> the caller's record object, built once per row

    def __post_init__(self) -> None:
        self.index = faiss.IndexFlatIP(self.dim)

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, rows: list[tuple], times: np.ndarray, tasks: list[str | None], vectors: np.ndarray) -> None:
        with self.lock:
            if len(times) == 0:
                return
            if self.time_sorted and (
                (len(self.times) and times[0] < self.times[-1]) or bool(np.any(np.diff(times) < 0))
            ):
                self.time_sorted = False
            self.index.add(vectors)
            self.rows.extend(rows)
            self.times = np.concatenate([self.times, times])
            self.tasks = np.concatenate([self.tasks, np.asarray(tasks, dtype=object)])

    def _selector(self, before_us: int | None, task: str | None) -> tuple[faiss.IDSelector | None, int]:
        """The positions a search may return, as a FAISS selector (None = all) and their count."""
        n = len(self.rows)
        if task is None and self.time_sorted:
            end = n if before_us is None else int(np.searchsorted(self.times, before_us, side="left"))
            return (None if end == n else faiss.IDSelectorRange(0, end)), end
        mask = np.ones(n, dtype=bool)
        if before_us is not None:
            mask &= self.times < before_us
        if task is not None:
            mask &= self.tasks == task
        positions = np.flatnonzero(mask).astype(np.int64)
        if len(positions) == n:
            return None, n
        return faiss.IDSelectorBatch(positions), len(positions)

    def search(
        self, vector: np.ndarray, k: int, *, before_us: int | None = None, task: str | None = None
    ) -> list[tuple[tuple, float]]:
        """Top-k (row, cosine score) among eligible rows, best first."""
        with self.lock:
            selector, eligible = self._selector(before_us, task)
            k = min(k, eligible)
            if k == 0:
                return []
            params = faiss.SearchParameters(sel=selector) if selector is not None else None
            # One query is fastest on one OpenMP thread (threads only add sync cost, and under load they
            # spin). The setting is per calling thread and shared with torch, so restore it at once.
            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            try:
                scores, positions = self.index.search(vector.reshape(1, -1), k, params=params)
            finally:
                faiss.omp_set_num_threads(threads)
            return [(self.rows[p], float(s)) for p, s in zip(positions[0], scores[0], strict=True) if p >= 0]


Loader = Callable[[str], tuple[list[tuple], np.ndarray, list[str | None], np.ndarray]]


class PartitionCache:
    """An LRU of user partitions. `loader(user_id)` reads a user's rows from DuckDB in time order."""

    def __init__(self, dim: int, loader: Loader, *, max_users: int = 4096) -> None:
        self.dim = dim
        self._loader = loader
        self._max_users = max_users
        self._parts: OrderedDict[str, UserPartition] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, user_id: str) -> UserPartition | None:
        with self._lock:
            part = self._parts.get(user_id)
            if part is not None:
                self._parts.move_to_end(user_id)
            return part

    def build(self, user_id: str) -> UserPartition:
        """Load a user's partition from DuckDB. Call with the store's write lock held, so no commit races it."""
        rows, times, tasks, vectors = self._loader(user_id)
        part = UserPartition(self.dim)
        part.append(rows, times, tasks, vectors)
        with self._lock:
            self._parts[user_id] = part
            self._parts.move_to_end(user_id)
            while len(self._parts) > self._max_users:
                self._parts.popitem(last=False)
        return part

    def drop(self, user_id: str | None = None) -> int:
        """Forget one cached partition (or all); returns how many vectors were dropped."""
        with self._lock:
            if user_id is None:
                total = sum(len(p) for p in self._parts.values())
                self._parts.clear()
                return total
            part = self._parts.pop(user_id, None)
            return len(part) if part is not None else 0

    def cached_users(self) -> list[str]:
        with self._lock:
            return list(self._parts)
