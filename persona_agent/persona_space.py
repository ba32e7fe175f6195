"""The persona space of a workspace: each user's persona beside the labels that user gave.

The paper's figure (notebooks/02_persona_space.ipynb) embeds every user's compiled persona, projects the
embeddings to 2-D and colours each user by their dominant label; beside it, the persona-similarity matrix and
the users' label-distribution similarity. If compiling learned each user's taste, users who label alike get
personas that read alike: `agreement` puts one number on that (the correlation of the two matrices' entries).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.manifold import TSNE

from persona_agent.core.errors import InvalidInputError
from persona_agent.stores.embeddings import Embedder
from persona_agent.workspace import Workspace


@dataclass(frozen=True)
class PersonaSpace:
    """Users (sorted) with their persona version and text, and how often each gave each label."""

    users: tuple[str, ...]
    versions: tuple[int, ...]
    personas: tuple[str, ...]
    labels: tuple[str, ...]
    counts: np.ndarray  # users x labels

    @property
    def dominant(self) -> list[str]:
        """Each user's most frequent label (ties: the first in `labels`, which is sorted)."""
        return [self.labels[int(i)] for i in self.counts.argmax(axis=1)]

    def label_similarity(self) -> np.ndarray:
        """Cosine similarity of the users' label distributions."""
        return cosine_similarity(self.counts.astype(float))


def find_home(path: Path | str) -> Path:
    """The home to read: `path` itself, or for the demo's folder (`<home>/demo`) its newest run. A folder with
    no memory database is refused, naming `home`."""
    path = Path(path).expanduser()
    runs = sorted(path.glob("run-*/memory.duckdb"))
    home = runs[-1].parent if runs and not (path / "memory.duckdb").exists() else path
    if not (home / "memory.duckdb").is_file():
        raise InvalidInputError("home", str(path), "has no memory.duckdb: run `persona-agent demo` or a compile first")
    return home


def read_space(ws: Workspace, version: str = "live") -> PersonaSpace:
    """Every user with a persona and interactions: the persona at `version` ("live" or "latest") and the
    labels (interaction responses) in memory. A home with fewer than two such users is refused, naming `home`."""
    if version not in ("live", "latest"):
        raise InvalidInputError("version", version, "choose 'live' or 'latest'")
    users = [u for u in ws.registry.users() if ws.store.count(u) > 0]
    if len(users) < 2:  # the demo compiles one user: `persona-agent compile --all` in its home gives the rest
        raise InvalidInputError(
            "home",
            str(ws.settings.home),
            f"has {len(users)} user(s) with a persona, the space needs 2 or more: "
            "compile every user first (`persona-agent compile --all`)",
        )
    records = [ws.registry.get(u, version) for u in users]
    given = [Counter(item.response for item in ws.store.history(u)) for u in users]
    labels = tuple(sorted(set().union(*given)))
    counts = np.array([[c[label] for label in labels] for c in given], dtype=int)
    return PersonaSpace(
        users=tuple(users),
        versions=tuple(r.version for r in records),
        personas=tuple(r.text for r in records),
        labels=labels,
        counts=counts,
    )


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
    """Rows' pairwise cosine similarity (a zero row is similar to nothing, itself included)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=float), where=norms > 0)
    return unit @ unit.T


def distinct_lines(personas: Sequence[str]) -> list[str]:
    """Each persona without the lines every persona has (the shared instructions of the initial persona), so
    the embeddings compare what is the user's own; a persona left empty keeps its full text."""
    split = [[line for line in p.splitlines() if line.strip()] for p in personas]
    shared = set.intersection(*(set(lines) for lines in split)) if len(split) > 1 else set()
    own = ["\n".join(line for line in lines if line not in shared) for lines in split]
    return [text or full for text, full in zip(own, personas, strict=True)]


def embed(space: PersonaSpace, embedder: Embedder, *, shared: bool = False) -> np.ndarray:
    """The personas' embeddings (one row per user): their distinct lines, or (`shared=True`) the whole text."""
    texts = list(space.personas) if shared else distinct_lines(space.personas)
    return np.asarray(embedder.encode(texts), dtype=float)


def project_2d(vectors: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """t-SNE to 2-D on cosine distance. Perplexity must stay below the number of points: a handful of users
    gets (n - 1) / 3, capped at scikit-learn's default of 30."""
    n = len(vectors)
    if n < 2:
        raise InvalidInputError("vectors", n, "needs at least 2 personas to project")
    perplexity = min(30.0, max(1.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="random", random_state=seed)
    return tsne.fit_transform(vectors)


def agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two similarity matrices over their distinct pairs (i < j); None with fewer than
    three pairs or when either is constant over them."""
    upper = np.triu_indices(len(a), k=1)
    x, y = a[upper], b[upper]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])
