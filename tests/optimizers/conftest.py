from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from persona_agent.stores import MemoryStore

T0 = datetime(2022, 1, 1)
HISTORY = {
    "alice": [
        ("Senate passes the infrastructure bill", "politics"),
        ("New museum wing opens with modern art", "culture & arts"),
        ("Gallery shows forgotten painters", "culture & arts"),
        ("Opera house reopens after renovation", "culture & arts"),
    ],
    "bob": [
        ("Striker breaks the scoring record", "sports"),
        ("Marathon route announced", "sports"),
        ("Coach fired after losing streak", "sports"),
        ("Stadium plans approved", "sports"),
    ],
}


@pytest.fixture
def store(tmp_path, embedder):
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as s:
        for user, rows in HISTORY.items():
            s.add(
                user,
                [{"query": q, "response": r, "created_at": T0 + timedelta(days=i)} for i, (q, r) in enumerate(rows)],
            )
        yield s
