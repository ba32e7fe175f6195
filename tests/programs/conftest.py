"""Shared fixtures for program tests: a real memory store with two users' rows."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from persona_agent.stores import MemoryStore

T0 = datetime(2021, 3, 1)
ALICE = [
    ("Senate passes the infrastructure bill after a long night", "politics"),
    ("Governor signs a new voting law", "politics"),
    ("Star striker breaks the scoring record", "sports"),
    ("Local bakery wins a national bread prize", "food & drink"),
]
BOB = [
    ("Championship final goes to extra time", "sports"),
    ("A quiet island that few travellers know", "travel"),
]


@pytest.fixture
def store(tmp_path, embedder):
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as s:
        for user, rows in (("alice", ALICE), ("bob", BOB)):
            s.add(
                user,
                [
                    {"query": q, "response": r, "task": "news", "created_at": T0 + timedelta(days=i)}
                    for i, (q, r) in enumerate(rows)
                ],
            )
        yield s
