"""Marked real-model test (in CI): PersonaAgent answers with the offline model in planned mode, one call.

Uses the sample shipped in the package: a writer's earlier items form her memory, her latest is the query,
answered with the memory cut off at its time. Checks the path issue 39 built on the real model: `auto` picks
the planned mode, the answer is one call scored over the allowed labels from the model's log-probabilities.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import dspy
import pytest

from persona_agent.core.usage import track_usage
from persona_agent.demo import sample_path
from persona_agent.lm.models import adapter_for, make_lm
from persona_agent.programs import PersonaAgent, init_persona
from persona_agent.signatures import LAMP_2N_CATEGORIES, CategorizeArticle
from persona_agent.stores import MemoryStore


@pytest.mark.slow
@pytest.mark.ci
def test_persona_agent_answers_a_sample_item_offline_in_one_call(tmp_path, embedder):
    rows = [json.loads(line) for line in sample_path().read_text().splitlines() if line.strip()]
    history = sorted((r for r in rows if r["user_id"] == "grace"), key=lambda r: r["created_at"])
    *earlier, query = history
    lm = make_lm("local")
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as store:
        store.add(
            "grace",
            [
                {"query": r["query"], "response": r["response"], "created_at": datetime.fromisoformat(r["created_at"])}
                for r in earlier
            ],
        )
        agent = PersonaAgent(
            CategorizeArticle,
            user_id="grace",
            store=store,
            persona=init_persona("grace", "A news writer; label new articles as she labelled similar ones."),
            allow_updates=False,
        )
        started = time.perf_counter()
        with track_usage() as usage, dspy.context(lm=lm, adapter=adapter_for(lm)):
            out = agent(article=query["query"], as_of=datetime.fromisoformat(query["created_at"]))
    report = usage.report()
    assert out.mode == "planned" and report.calls == 1
    assert out.category in LAMP_2N_CATEGORIES
    assert set(out.scores) <= set(LAMP_2N_CATEGORIES) and abs(sum(out.scores.values()) - 1) < 1e-6
    print(f"\ngold={query['response']} predicted={out.category} top={max(out.scores, key=out.scores.get)}")
    print(f"LM calls={report.calls} tokens={report.total_tokens} seconds={time.perf_counter() - started:.1f}")
