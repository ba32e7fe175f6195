"""A knowledge source the agent can search (the paper's Wikipedia search, here any local corpus).

Documents live in their own DuckDB file with their embeddings (the source of truth) and are searched
through one exact FAISS inner-product index built from it. Knowledge is shared, not personal: every
user's agent may read it, none may write to it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import duckdb
import faiss
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from persona_agent.core.errors import InvalidInputError, StoreError
from persona_agent.stores.embeddings import Embedder
from persona_agent.stores.validation import validate_k, validate_text, validate_vectors


class Document(BaseModel):
    """One knowledge document; `text` is what is embedded and shown."""

    model_config = ConfigDict(frozen=True)

    id: str
    title: str
    text: str
    source: str = ""


class KnowledgeHit(BaseModel):
    model_config = ConfigDict(frozen=True)

    document: Document
    score: float
    rank: int


class KnowledgeBase:
    """Documents in DuckDB + an exact FAISS index over them. Thread-safe within one process."""

    def __init__(self, path: str | Path, *, embedder: Embedder, max_text_chars: int = 20_000) -> None:
        self.path = Path(path)
        self.embedder = embedder
        self.max_text_chars = max_text_chars
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.Error as exc:
            raise StoreError(f"Cannot open the knowledge base at {path}: {exc}") from exc
        self._lock = threading.RLock()
        self._index: faiss.IndexFlatIP | None = None
        self._docs: list[Document] = []
        with self._lock:
            self._con.execute("CREATE TABLE IF NOT EXISTS kb_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
            meta = dict(self._con.execute("SELECT key, value FROM kb_meta").fetchall())
            self.dim = int(meta["embedding_dim"]) if meta.get("embedder") == embedder.name else int(embedder.dim)
            if "embedding_dim" in meta and int(meta["embedding_dim"]) != self.dim:
                raise StoreError(
                    f"This knowledge base holds {meta['embedding_dim']}-d vectors; the embedder makes {self.dim}-d."
                )
            if not meta:
                self._con.executemany(
                    "INSERT INTO kb_meta VALUES (?, ?)", [("embedding_dim", str(self.dim)), ("embedder", embedder.name)]
                )
            self._con.execute(
                f"CREATE TABLE IF NOT EXISTS documents (id VARCHAR NOT NULL, title VARCHAR NOT NULL, "
                f"text VARCHAR NOT NULL, source VARCHAR NOT NULL, embedding FLOAT[{self.dim}] NOT NULL)"
            )

    def __deepcopy__(self, memo: dict) -> KnowledgeBase:
        """A store is a shared handle: copies of a program share it (DSPy deep-copies programs)."""
        return self

    def close(self) -> None:
        with self._lock:
            self._con.close()
            self._index = None

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return int(self._con.execute("SELECT count(*) FROM documents").fetchall()[0][0])

    def add(self, documents: Sequence[Mapping[str, Any]], *, batch_size: int = 256) -> list[str]:
        """Embed and store documents ({title, text, source?, id?}); each batch is one transaction."""
        docs = []
        for i, raw in enumerate(documents):
            if not isinstance(raw, Mapping):
                raise InvalidInputError(f"documents[{i}]", raw, "must be a mapping with title and text")
            text = validate_text(raw.get("text"), f"documents[{i}].text", self.max_text_chars)
            title = validate_text(raw.get("title", ""), f"documents[{i}].title", 1000, allow_empty=True)
            docs.append(
                Document(
                    id=str(raw.get("id") or f"doc_{uuid.uuid4().hex}"),
                    title=title,
                    text=text,
                    source=str(raw.get("source", "")),
                )
            )
        for start in range(0, len(docs), batch_size):
            chunk = docs[start : start + batch_size]
            vectors = validate_vectors(self.embedder.encode([_embed_text(d) for d in chunk]), self.dim, len(chunk))
            table = pa.table(
                {
                    "id": [d.id for d in chunk],
                    "title": [d.title for d in chunk],
                    "text": [d.text for d in chunk],
                    "source": [d.source for d in chunk],
                    "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim),
                }
            )
            with self._lock:
                self._con.register("_new_docs", table)
                try:
                    self._con.execute("INSERT INTO documents SELECT * FROM _new_docs")
                finally:
                    self._con.unregister("_new_docs")
                if self._index is not None:
                    self._index.add(vectors)
                    self._docs.extend(chunk)
        return [d.id for d in docs]

    def add_jsonl(self, path: str | Path, *, source: str | None = None) -> list[str]:
        """Load documents from a JSON-lines file of {title, text[, id, source]} objects."""
        path = Path(path)
        docs = []
        with path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidInputError(f"{path}:{n}", line[:80], f"is not JSON ({exc.msg})") from None
                docs.append({**rec, "source": rec.get("source") or source or path.name})
        return self.add(docs)

    def add_folder(self, folder: str | Path, *, patterns: Iterable[str] = ("*.txt", "*.md")) -> list[str]:
        """Load every text/markdown file of a folder (recursively) as one document titled by its name."""
        folder = Path(folder)
        if not folder.is_dir():
            raise InvalidInputError("folder", str(folder), "is not a directory")
        files = sorted({p for pattern in patterns for p in folder.rglob(pattern) if p.is_file()})
        return self.add(
            [
                {"title": p.stem, "text": p.read_text(encoding="utf-8"), "source": str(p.relative_to(folder))}
                for p in files
            ]
        )

    def _ensure_index(self) -> faiss.IndexFlatIP:
        with self._lock:
            if self._index is None:
                table = self._con.sql("SELECT id, title, text, source, embedding FROM documents").to_arrow_table()
                n = table.num_rows
                index = faiss.IndexFlatIP(self.dim)
                if n:
                    emb = table.column("embedding").combine_chunks()
                    index.add(np.asarray(emb.values.to_numpy(zero_copy_only=False), np.float32).reshape(n, self.dim))
                rows = zip(*(table.column(c).to_pylist() for c in ("id", "title", "text", "source")), strict=True)
                self._docs = [Document(id=i, title=t, text=x, source=s) for i, t, x, s in rows]
                self._index = index
            return self._index

    def search(self, query: str, k: int = 3) -> list[KnowledgeHit]:
        """The `k` documents most similar to `query`, best first (cosine; higher is more similar)."""
        query = validate_text(query, "query", self.max_text_chars)
        k = validate_k(k)
        vector = self.embedder.encode([query])
        with self._lock:
            index = self._ensure_index()
            if index.ntotal == 0:
                return []
            scores, positions = index.search(vector, min(k, index.ntotal))
            docs = self._docs
        return [
            KnowledgeHit(document=docs[p], score=float(s), rank=r)
            for r, (p, s) in enumerate(zip(positions[0], scores[0], strict=True))
            if p >= 0
        ]


def _embed_text(doc: Document) -> str:
    return f"{doc.title}. {doc.text}" if doc.title else doc.text
