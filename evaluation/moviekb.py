"""The knowledge source for LaMP-2M: public movie metadata from the data folder, standing in for the
paper's Wikipedia search.

One document per movie: title (year), genres, TMDB keywords and tagline, and the plot (the IMDb plot for
MovieLens-1M ids, else the TMDB overview). TMDB movies that `links.csv` ties to an ML-1M id are merged
into that movie's document. Nothing here comes from MovieLens users: their tags are the labels.

Embedding ~7k documents takes a minute or two, so the built base is cached as a DuckDB file named by a
digest of its inputs (source file sizes and times, embedder, format version): built once, rebuilt only
when one of them changes. The cache lives outside the results folder: it is an extract of the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from persona_agent.core.lamp import require_file
from persona_agent.evaluation.builders import csv_rows
from persona_agent.evaluation.movielens import IMDB_PLOTS_FILE, LINKS_FILE, TMDB_FILE
from persona_agent.stores.embeddings import Embedder
from persona_agent.stores.knowledge import KnowledgeBase

KB_FORMAT = 1
MAX_KEYWORDS = 12


def _names(raw: str) -> list[str]:
    """TMDB's JSON lists of {"id", "name"} -> names; tolerant of empty cells."""
    try:
        items = json.loads(raw) if raw.strip() else []
    except json.JSONDecodeError:
        return []
    return [str(i["name"]) for i in items if isinstance(i, dict) and i.get("name")]


def _rows(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The file's rows, once its header holds the `columns` the documents read by key."""
    return [row for _, row in csv_rows(path, columns)]


def movie_documents(data_dir: Path | str) -> list[dict[str, Any]]:
    """Knowledge documents ({id, title, text, source}) for every described movie, sorted by id."""
    root = Path(data_dir)
    tmdb_to_ml = {
        row["tmdbId"].strip(): row["movieId"].strip()
        for row in _rows(root / LINKS_FILE, ("movieId", "tmdbId"))
        if row["tmdbId"].strip()
    }
    docs: dict[str, dict[str, Any]] = {}
    for row in _rows(root / IMDB_PLOTS_FILE, ("movieId", "title")):
        docs[f"ml-{row['movieId'].strip()}"] = {
            "title": " ".join(row["title"].split()),
            "genres": [g for g in row.get("genres", "").split("|") if g],
            "keywords": [],
            "tagline": "",
            "plot": " ".join(row.get("plot", "").split()),
            "source": "ml1m-imdb-plots",
        }
    for row in _rows(root / TMDB_FILE, ("id",)):
        year = row.get("release_date", "")[:4]
        extra = {
            "genres": _names(row.get("genres", "")),
            "keywords": _names(row.get("keywords", ""))[:MAX_KEYWORDS],
            "tagline": " ".join(row.get("tagline", "").split()),
        }
        ml_id = tmdb_to_ml.get(row["id"].strip())
        merged = docs.get(f"ml-{ml_id}") if ml_id else None
        if merged is not None:
            merged["genres"] = list(dict.fromkeys([*merged["genres"], *extra["genres"]]))
            merged["keywords"], merged["tagline"] = extra["keywords"], extra["tagline"]
            merged["source"] = "ml1m-imdb-plots+tmdb5000"
            continue
        title = " ".join(row.get("title", "").split())
        docs[f"tmdb-{row['id'].strip()}"] = {
            "title": f"{title} ({year})" if year else title,
            **extra,
            "plot": " ".join(row.get("overview", "").split()),
            "source": "tmdb5000",
        }
    out = []
    for doc_id in sorted(docs):
        d = docs[doc_id]
        parts = [
            f"Genres: {', '.join(d['genres'])}." if d["genres"] else "",
            f"Keywords: {', '.join(d['keywords'])}." if d["keywords"] else "",
            d["tagline"],
            d["plot"],
        ]
        text = " ".join(p for p in parts if p)
        if text and d["title"]:
            out.append({"id": doc_id, "title": d["title"], "text": text, "source": d["source"]})
    return out


def _digest(root: Path, embedder: Embedder) -> str:
    parts = [f"format={KB_FORMAT}", f"embedder={embedder.name}"]
    for name in (IMDB_PLOTS_FILE, TMDB_FILE, LINKS_FILE):
        stat = require_file(root / name).stat()
        parts.append(f"{name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]


def movie_knowledge_base(data_dir: Path | str, cache_dir: Path | str, embedder: Embedder) -> KnowledgeBase:
    """The movie knowledge base, built into `cache_dir` on first use and reopened afterwards."""
    root, cache = Path(data_dir), Path(cache_dir)
    path = cache / f"movies-kb-{_digest(root, embedder)}.duckdb"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.building")
        tmp.unlink(missing_ok=True)
        with KnowledgeBase(tmp, embedder=embedder) as kb:
            kb.add(movie_documents(root))
        os.replace(tmp, path)  # a half-built base never carries the final name
    return KnowledgeBase(path, embedder=embedder)
