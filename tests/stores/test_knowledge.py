"""The knowledge base: JSONL and folder corpora in DuckDB, searched through FAISS, persisted."""

from __future__ import annotations

import json

import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.stores.knowledge import KnowledgeBase

DOCS = [
    {"title": "Solaris", "text": "A psychologist is sent to a space station orbiting an ocean planet."},
    {"title": "Amélie", "text": "A shy waitress in Paris decides to change the lives of those around her."},
    {"title": "Heat", "text": "A detective pursues a crew of professional bank robbers in Los Angeles."},
]


def test_jsonl_corpus_search_and_persistence(tmp_path, embedder):
    corpus = tmp_path / "films.jsonl"
    corpus.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    path = tmp_path / "kb.duckdb"
    with KnowledgeBase(path, embedder=embedder) as kb:
        kb.add_jsonl(corpus)
        hits = kb.search("a film about astronauts in orbit", k=2)
        assert hits[0].document.title == "Solaris"
        assert hits[0].document.source == "films.jsonl"
        kb.add([{"title": "Alien", "text": "The crew of a space freighter meets a deadly creature."}])
        assert "Alien" in {h.document.title for h in kb.search("space creature", k=2)}
    with KnowledgeBase(path, embedder=embedder) as kb:
        assert len(kb) == 4
        assert len(kb.search("robbery", k=10)) == 4


def test_folder_corpus(tmp_path, embedder):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "paris.md").write_text("Paris is the capital of France.")
    (folder / "sub" / "tokyo.txt").write_text("Tokyo is the capital of Japan.")
    with KnowledgeBase(":memory:", embedder=embedder) as kb:
        kb.add_folder(folder)
        assert kb.search("Japanese capital city", k=1)[0].document.title == "tokyo"


def test_bad_documents_write_nothing(tmp_path, embedder):
    with KnowledgeBase(":memory:", embedder=embedder) as kb:
        with pytest.raises(InvalidInputError, match=r"documents\[1\]\.text"):
            kb.add([DOCS[0], {"title": "empty", "text": "  "}])
        assert len(kb) == 0
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"title": "ok", "text": "fine"}\nnot json\n')
        with pytest.raises(InvalidInputError, match=r"bad\.jsonl:2"):
            kb.add_jsonl(bad)
        assert len(kb) == 0
