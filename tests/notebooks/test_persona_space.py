"""The persona-space notebook and its module: the notebook is stored clean and runs end to end on a home built
from the shipped sample by the scripted LM (`persona_space_home`), and what it computes is checked here."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError
from persona_agent.persona_space import (
    agreement,
    cosine_similarity,
    distinct_lines,
    find_home,
    project_2d,
    read_space,
)
from persona_agent.workspace import Workspace
from tests.notebooks.persona_space_home import build_home

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "02_persona_space.ipynb"
OUTCOME_CELL = """
import json as _json
print(_json.dumps({
    "users": list(space.users), "versions": list(space.versions), "dominant": space.dominant,
    "vectors": list(vectors.shape), "points": list(points.shape), "agreement": fit,
    "persona_sim": persona_sim.round(4).tolist(), "label_sim": label_sim.round(4).tolist(),
}))
"""
TASTES = {
    "ada": "business",
    "grace": "science & technology",
    "lin": "food & drink",
    "omar": "healthy living",
    "rosa": "parents",
}


@pytest.fixture(scope="module")
def space_root(tmp_path_factory, embedder, mlflow_template) -> Path:
    """The demo-style folder (`<root>/run-*`) of a scripted run that profiled and compiled every sample user."""
    root = tmp_path_factory.mktemp("space") / "demo"
    build_home(root, embedder=embedder, mlflow_db=mlflow_template)
    return root


def test_the_space_of_the_sample_has_each_users_taste(space_root, embedder):
    with Workspace(Settings(home=find_home(space_root)), embedder=embedder) as ws:
        space = read_space(ws)
        latest = read_space(ws, "latest")
    assert space.users == tuple(TASTES) and space.dominant == list(TASTES.values())
    assert space.counts.sum() == 80 and space.counts.shape == (5, len(space.labels))
    assert space.versions == latest.versions and any(v >= 1 for v in space.versions)  # compiled, promoted
    assert all(
        f"Files such stories under {TASTES[u]}." in p
        for u, p in zip(space.users, space.personas, strict=True)
        if u != "grace"
    )
    labels = space.label_similarity()
    assert np.allclose(np.diag(labels), 1.0) and labels[0, 1] == pytest.approx(0.0)  # ada and grace share no label


def test_read_space_refuses_a_bad_version_and_an_empty_home(tmp_path, embedder, space_root):
    with Workspace(Settings(home=find_home(space_root)), embedder=embedder) as ws:
        with pytest.raises(InvalidInputError) as info:
            read_space(ws, "champion")
    assert info.value.field == "version"
    with Workspace(Settings(home=tmp_path / "empty"), embedder=embedder) as ws:
        with pytest.raises(InvalidInputError) as info:
            read_space(ws)
    assert info.value.field == "home"
    with pytest.raises(InvalidInputError) as info:
        find_home(tmp_path / "nothing")
    assert info.value.field == "home"
    home = find_home(space_root)  # the demo-style folder's newest run; a home is itself
    assert home.parent == space_root and find_home(home) == home


def test_distinct_lines_drop_what_every_persona_shares():
    shared = "## Agent instructions\nAct for this user."
    personas = [f"Likes jazz.\n{shared}", f"Likes rock.\n\n{shared}", shared]
    assert distinct_lines(personas) == ["Likes jazz.", "Likes rock.", shared]  # an all-shared one keeps its text
    assert distinct_lines(["only one"]) == ["only one"]


def test_similarities_agreement_and_projection():
    sim = cosine_similarity(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [0.0, 0.0]]))
    assert np.allclose(sim[:3, :3], [[1, 1, 0], [1, 1, 0], [0, 0, 1]]) and not sim[3].any()
    a = np.array([[1, 0.9, 0.1], [0.9, 1, 0.2], [0.1, 0.2, 1]])
    assert agreement(a, a) == pytest.approx(1.0) and agreement(a, 1 - a) == pytest.approx(-1.0)
    assert agreement(a[:2, :2], a[:2, :2]) is None and agreement(a, np.ones((3, 3))) is None
    rng = np.random.default_rng(0)
    points = project_2d(rng.normal(size=(5, 8)))
    assert points.shape == (5, 2) and np.isfinite(points).all()
    with pytest.raises(InvalidInputError):
        project_2d(np.ones((1, 8)))


def test_the_notebook_is_stored_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_the_notebook_draws_the_figure_from_a_home(space_root, tmp_path, monkeypatch, kernel):
    figure = tmp_path / "space.png"
    monkeypatch.setenv("PERSONA_SPACE_HOME", str(space_root))  # the demo-style folder: the notebook finds the run
    monkeypatch.setenv("PERSONA_SPACE_FIGURE", str(figure))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(OUTCOME_CELL))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    NotebookClient(nb, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(cwd)}}).execute()
    out = json.loads("".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream"))

    assert out["users"] == list(TASTES) and out["dominant"] == list(TASTES.values())
    assert out["vectors"] == [5, 384] and out["points"] == [5, 2]
    persona_sim, label_sim = np.array(out["persona_sim"]), np.array(out["label_sim"])
    assert np.allclose(np.diag(persona_sim), 1.0, atol=1e-3) and persona_sim.shape == label_sim.shape == (5, 5)
    assert out["agreement"] == pytest.approx(agreement(persona_sim, label_sim), abs=1e-3)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and list(cwd.iterdir()) == []
