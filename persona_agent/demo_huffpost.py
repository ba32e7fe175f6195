"""The real-data demo (`persona-agent demo --data DIR`): real per-user text in, personal memory search out.

It ingests HuffPost articles (authors as users) from the shared data folder into a fresh memory store,
then, for a few authors, searches each author's own memory for the articles most like their latest one,
strictly before it (as an evaluation would). With an LM it then runs the whole loop for the busiest
author: a profile from memory, the initial persona, and the persona-steered agent answering with its
tools. Everything runs locally: the embedder and the offline LM ship in PyPI packages.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dspy

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError
from persona_agent.stores import MemoryStore, SearchHit

HUFFPOST_FILE = "huffpost-news/News_Category_Dataset_v3.json"


def author_user_id(authors: str) -> str:
    """A HuffPost byline as a valid user id: lower-case, runs of other characters become '-'."""
    return re.sub(r"[^a-z0-9]+", "-", authors.lower()).strip("-")[:128]


def iter_huffpost(path: Path, limit: int) -> Iterator[tuple[str, dict]]:
    """(user id, interaction) pairs from the HuffPost JSON-lines file; articles without an author are skipped."""
    with path.open(encoding="utf-8") as f:
        taken = 0
        for line_no, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                user = author_user_id(rec["authors"])
                query = f"{rec['headline']}. {rec['short_description']}".strip()
                created = datetime.fromisoformat(rec["date"])
            except (KeyError, ValueError) as exc:
                raise InvalidInputError(f"{path}:{line_no}", line[:80], f"is not a HuffPost record ({exc})") from None
            if not user or not query.strip(". "):
                continue
            yield user, {"query": query, "response": rec["category"].lower(), "task": "news", "created_at": created}
            taken += 1
            if taken == limit:
                return


@dataclass
class AgentAnswer:
    """One answer of a user's PersonaAgent, with what it cost."""

    user_id: str
    request: str
    gold: str
    persona: str
    response: str
    trajectory: list[dict]
    lm_calls: int
    tokens: int
    seconds: float


@dataclass
class DemoResult:
    articles: int
    users: int
    ingest_seconds: float
    searches: list[tuple[str, str, list[SearchHit]]]
    answer: AgentAnswer | None = None


def answer_as_agent(store: MemoryStore, user: str, lm: dspy.LM) -> AgentAnswer:
    """The whole loop for one user, offline: a profile from their memory (semantic memory), the initial
    persona from it, and the persona-steered agent answering their latest article, its memory cut off
    just before that article."""
    from persona_agent.core.usage import track_usage
    from persona_agent.lm.models import adapter_for
    from persona_agent.programs import PersonaAgent, ProfileBuilder, init_persona

    latest = store.latest(user, 1)[0]
    request = f"Which news category would you file this article under? {latest.query}"
    with track_usage() as usage, dspy.context(lm=lm, adapter=adapter_for(lm)):
        profile = ProfileBuilder(max_records=20).build(store, user, before=latest.created_at)
        persona = init_persona(user, profile)
        agent = PersonaAgent(user_id=user, store=store, persona=persona, max_iters=1, allow_updates=False)
        out = agent(request=request, as_of=latest.created_at)
    report = usage.report()
    return AgentAnswer(
        user,
        request,
        latest.response,
        persona.text,
        out.response,
        out.trajectory,
        report.calls,
        report.total_tokens,
        report.seconds,
    )


def run_demo(
    data_dir: Path,
    *,
    articles: int = 1000,
    authors: int = 3,
    settings: Settings | None = None,
    lm: dspy.LM | None = None,
) -> DemoResult:
    settings = settings or Settings()
    path = data_dir / HUFFPOST_FILE
    if not path.is_file():
        raise InvalidInputError(
            "data_dir",
            str(data_dir),
            f"has no {HUFFPOST_FILE} (the HuffPost news file; see SOURCES.md in the data folder)",
        )
    db = settings.home / "demo.duckdb"
    db.unlink(missing_ok=True)
    db.with_name(db.name + ".wal").unlink(missing_ok=True)
    records = list(iter_huffpost(path, articles))
    with MemoryStore(db, settings=settings) as store:
        t = time.perf_counter()
        for start in range(0, len(records), 64):
            store.ingest(records[start : start + 64])
        elapsed = time.perf_counter() - t
        busiest = sorted(store.users(), key=store.count, reverse=True)[:authors]
        searches = []
        for user in busiest:
            latest = store.latest(user, 1)[0]
            hits = store.search(user, latest.query, k=3, before=latest.created_at)
            searches.append((user, latest.query, hits))
        answer = answer_as_agent(store, busiest[0], lm) if lm is not None and busiest else None
        return DemoResult(len(records), len(store.users()), elapsed, searches, answer)
