"""The pyfunc form of a saved program travels: its MLmodel names no path of the machine that saved it, its
requirements name this project's own distribution, and it loads and answers from another folder (issue 41
item 6)."""

from __future__ import annotations

import shutil
from pathlib import Path

import dspy

from persona_agent.programs import PersonaAgent
from persona_agent.programs.documents import DISTRIBUTION, program_document
from persona_agent.programs.persona import Persona
from persona_agent.testing import ScriptedLM
from persona_agent.tracking.pyfunc import CODE_PATH, requirements, save_program_model
from tests.support import ANSWER, CONCISE, REACT, history, make_workspace


def test_the_saved_model_names_no_local_path_and_loads_elsewhere(tmp_path):
    import mlflow.pyfunc

    agent = PersonaAgent(user_id="alice", persona=Persona(user_id="alice", text=CONCISE, version=1))
    saved = save_program_model(program_document(agent), tmp_path / "here" / "model")
    mlmodel = (saved / "MLmodel").read_text()
    for local in (str(tmp_path), str(CODE_PATH.parent), "/tmp/"):
        assert local not in mlmodel, local
    moved = shutil.move(str(saved), str(tmp_path / "elsewhere" / "model"))
    shutil.rmtree(tmp_path / "here")
    model = mlflow.pyfunc.load_model(moved)
    lm = ScriptedLM(
        {
            REACT: {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            ANSWER: lambda call: {"response": "two words" if "concise" in call.messages[0]["content"] else "long"},
        }
    )
    with dspy.context(lm=lm):
        assert model.predict([{"request": "news?"}]) == [{"response": "two words"}]


def test_requirements_name_our_own_distribution(tmp_path):
    assert DISTRIBUTION == "dspy-persona"
    assert requirements()[0].startswith("dspy-persona==")
    agent = PersonaAgent(user_id="bob")
    saved = save_program_model(program_document(agent), tmp_path / "model")
    lines = Path(saved, "requirements.txt").read_text().split()
    assert any(line.startswith("dspy-persona==") for line in lines)
    assert not any(line.startswith("persona-agent") for line in lines)


def test_a_database_path_gives_the_loaded_model_its_memory_tools(tmp_path, embedder):
    import mlflow.pyfunc

    workspace = make_workspace(embedder)
    workspace.store.add("alice", history())
    document = program_document(PersonaAgent(user_id="alice", store=workspace.store))  # as a compile saves it
    db_path = workspace.settings.resolved_db_path
    workspace.close()
    saved = save_program_model(document, tmp_path / "model")
    plain = mlflow.pyfunc.load_model(str(saved)).unwrap_python_model().agent
    with_memory = mlflow.pyfunc.load_model(str(saved), model_config={"db_path": str(db_path)})
    agent = with_memory.unwrap_python_model().agent
    assert "search_memory" not in plain.tool_names and "search_memory" in agent.tool_names
    assert agent.store.search("alice", "question 1", k=1)


def test_requirements_without_our_distribution_installed_still_pin_the_rest(monkeypatch):
    from importlib import metadata

    real = metadata.version

    def version(name: str) -> str:
        if name == DISTRIBUTION:  # a checkout installed under an older name, or not installed at all
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    assert [line.split("==")[0] for line in requirements()] == ["dspy", "mlflow"]
