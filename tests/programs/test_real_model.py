"""Marked real-model test: PersonaAgent answers one real HuffPost example offline with a valid label.

Reads ../shared/data (skipped where it is absent); the author's earlier articles form their memory,
the latest is the query, answered with the memory cut off at its date.
"""

from __future__ import annotations

import time
from pathlib import Path

import dspy
import pytest

from persona_agent.core.usage import track_usage
from persona_agent.evaluation import build_huffpost_categories
from persona_agent.lm.models import adapter_for, make_lm
from persona_agent.programs import PersonaAgent, init_persona
from persona_agent.signatures import LAMP_2N_CATEGORIES, CategorizeArticle
from persona_agent.stores import MemoryStore

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.skipif(not (DATA / "huffpost-news").is_dir(), reason="needs ../shared/data")
def test_persona_agent_answers_a_real_huffpost_example_offline(tmp_path, embedder):
    dataset = build_huffpost_categories(DATA)
    user = max(dataset.users, key=lambda u: len(u.history))  # the longest real history
    query = user.queries[0]
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as store:
        store.add(
            user.user_id,
            [
                {"query": it.input, "response": it.output, "created_at": it.timestamp}
                for it in user.profile_before(query)
            ],
        )
        agent = PersonaAgent(
            CategorizeArticle,
            user_id=user.user_id,
            store=store,
            persona=init_persona(user.user_id, "A news author; label new articles as they labelled similar ones."),
            max_iters=1,
            allow_updates=False,
        )
        lm = make_lm("local")
        started = time.perf_counter()
        with track_usage() as usage, dspy.context(lm=lm, adapter=adapter_for(lm)):
            out = agent(article=query.input, as_of=query.timestamp)
    assert out.category in LAMP_2N_CATEGORIES
    report = usage.report()
    assert 1 <= report.calls <= 2
    print(f"\n{user.user_id}: gold={query.output} predicted={out.category} trajectory={out.trajectory}")
    print(f"LM calls={report.calls} tokens={report.total_tokens} seconds={time.perf_counter() - started:.1f}")
