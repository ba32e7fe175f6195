"""The walkthrough notebook: stored clean and valid, importing only real names, and really run end to end.

The fast run replaces the notebook's one LM (the `lm` variable of the cell tagged "lm") with a scripted LM in a
cell inserted right after it, so every step runs for real (memory, profile, agent, PersonaAligner compile, MLflow
run and registered model, load_program, forget) in seconds. A final cell prints the outcomes as JSON.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_compile_track_serve.ipynb"
LM_TAG = "lm"

# A scripted LM for the notebook's request -> response agent: the agent searches memory once, then answers with a
# headline if its persona asks for "at most four words" and with a long summary otherwise; the loss calls a long
# answer a mismatch, the gradient says why, and the edit adds the rule to the profile.
SCRIPTED_LM_CELL = """
from persona_agent.testing import ScriptedLM

RULE = "Wants every summary as a headline of at most four words."


def react(call):
    return {
        "next_thought": "See how this user summarised similar news before.",
        "next_tool_name": "search_memory",
        "next_tool_args": {"query": call.inputs["request"], "k": 2},
    }


def respond(call):
    if "at most four words" in call.messages[0]["content"]:
        return {"response": "New library opens."}
    story = call.inputs["request"].removeprefix("Summarise: ")
    return {"response": f"In summary, {story} The article then explains what this means for local residents."}


def loss(call):
    short = len(call.inputs["simulated_response"].split()) <= 4
    return {"matches": short, "critique": "" if short else "The user wanted a headline of at most four words."}


lm = ScriptedLM(
    {
        "request, trajectory -> next_thought, next_tool_name, next_tool_args": react,
        "request, trajectory -> response": respond,
        "records, existing_profile, max_words -> profile": {"profile": "Follows city news; asks for summaries."},
        "persona, request, simulated_response, ground_truth_response -> matches, critique": loss,
        "persona, losses -> gradient": {"gradient": "- Profile: add that the user wants four-word headlines."},
        "persona, gradient -> add, remove": {"add": [RULE], "remove": []},
    }
)
"""

OUTCOME_CELL = """
import json as _json

print(_json.dumps({
    "first": first.response,
    "second": second.response,
    "compiled_version": compiled.persona.version,
    "estimate": plan.estimate,
    "result": result.model_dump(mode="json"),
    "trace": trace,
    "run_status": run.info.status,
    "run_artifacts": sorted(artifacts),
    "versions": [[r.version, r.source, r.mlflow_run_id] for r in versions],
    "model_versions": [[str(mv.version), mv.tags.get("persona_version")] for mv in model_versions],
    "champion": None if champion is None else str(champion.version),
    "forget": report.model_dump(mode="json"),
    "home_exists": os.path.exists(home.name),
    "lm_calls": len(lm.calls) if hasattr(lm, "calls") else None,  # a ScriptedLM counts its calls
}))
"""


def load_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def run_notebook(nb: nbformat.NotebookNode, cwd: Path, kernel: str, timeout: int) -> dict:
    """Execute every code cell in order in a fresh kernel started in `cwd`; the outcome cell's JSON."""
    nb.cells.append(nbformat.v4.new_code_cell(OUTCOME_CELL))
    NotebookClient(nb, timeout=timeout, kernel_name=kernel, resources={"metadata": {"path": str(cwd)}}).execute()
    stdout = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    return json.loads(stdout)


def test_the_notebook_is_stored_valid_and_clean_and_imports_only_real_names():
    nb = load_notebook()
    nbformat.validate(nb)
    assert nb.nbformat == 4
    cells = code_cells(nb)
    assert len([c for c in cells if LM_TAG in c.metadata.get("tags", [])]) == 1, "exactly one code cell is tagged 'lm'"
    for cell in cells:
        assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} was stored with outputs"
        tree = ast.parse(cell.source, filename=f"cell {cell.id}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "persona_agent":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module} has no {alias.name} (cell {cell.id})"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "persona_agent":
                        importlib.import_module(alias.name)


def test_the_notebook_runs_end_to_end_with_a_scripted_lm(tmp_path, monkeypatch, kernel):
    nb = load_notebook()
    lm_cell = next(i for i, c in enumerate(nb.cells) if LM_TAG in c.metadata.get("tags", []))
    nb.cells.insert(lm_cell + 1, nbformat.v4.new_code_cell(SCRIPTED_LM_CELL))
    # The notebook's own LM cell still runs: a LiteLLM spec builds a client without any call or download.
    monkeypatch.setenv("PERSONA_AGENT_LM", "openai/not-called")
    monkeypatch.delenv("PERSONA_AGENT_MLFLOW_REGISTER_MODELS", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    out = run_notebook(nb, cwd, kernel, timeout=600)

    # the agent searched memory and answered at length under the initial persona ...
    assert out["first"].startswith("In summary,")
    # ... the compile stayed within its estimate and budget, and every phase did its work
    assert out["estimate"] == {
        "batch": 3,
        "capped": False,
        "iterations": 1,
        "simulate": 6,
        "loss": 3,
        "gradient": 1,
        "update": 1,
        "evaluate": 0,
        "max_lm_calls": 11,
    }
    result = out["result"]
    assert (result["version"], result["parent"], result["changed"], result["promoted"]) == (1, 0, True, True)
    assert result["stop_reason"] == "completed" and result["usage"]["calls"] == 11 <= 12
    (step,) = out["trace"]["iterations"]
    assert len(step["examples"]) == 3 and all(e["trajectory"][0]["tool"] == "search_memory" for e in step["examples"])
    assert all(not e["matches"] and "four words" in e["critique"] for e in step["examples"])
    assert "four-word headlines" in step["gradient"] and step["accepted"] is True
    assert "- Wants every summary as a headline of at most four words." in out["trace"]["final_persona"]["text"]
    # ... MLflow has the run with its artifacts, and the registered model's champion is the new version
    assert out["run_status"] == "FINISHED"
    assert out["run_artifacts"] == ["alignment_trace.json", "model", "persona.diff", "persona.md", "program.json"]
    assert [v[:2] for v in out["versions"]] == [[0, "init"], [1, "aligned"]]
    assert out["versions"][1][2] == result["mlflow_run_id"]
    assert out["model_versions"] == [["1", "1"]] and out["champion"] == result["model_version"] == "1"
    # ... the loaded program answers with the aligned persona
    assert out["compiled_version"] == 1 and out["second"] == "New library opens."
    # ... and forget removed everything, everywhere
    forget = out["forget"]
    assert (forget["interactions"], forget["vectors"], forget["profiles"]) == (6, 6, 1)
    assert forget["extra"]["personas"] == 2 and forget["extra"]["mlflow_runs"] == 2  # v0 (logged by the compile) and v1
    assert forget["extra"]["mlflow_registered_models"] == 1
    # nothing was written outside the temporary home, which is gone
    assert not out["home_exists"] and list(cwd.iterdir()) == []
    assert out["lm_calls"] == 1 + 2 + 11 + 2  # profile, first answer, compile, second answer


@pytest.mark.slow
def test_the_notebook_runs_with_the_real_local_model(tmp_path, monkeypatch, kernel):
    pytest.importorskip("xllamacpp")
    monkeypatch.delenv("PERSONA_AGENT_LM", raising=False)  # the notebook's default: the offline local model
    monkeypatch.delenv("PERSONA_AGENT_MLFLOW_REGISTER_MODELS", raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    out = run_notebook(load_notebook(), cwd, kernel, timeout=3 * 3600)

    result = out["result"]
    assert out["estimate"]["max_lm_calls"] == 11 and result["usage"]["calls"] <= 12
    assert out["run_status"] == "FINISHED" and result["mlflow_run_id"]
    assert out["versions"][0][1] == "init" and result["version"] >= result["parent"] == 0
    assert out["first"].strip() and out["second"].strip()
    assert out["forget"]["interactions"] == 6 and out["forget"]["extra"]["mlflow_runs"] >= 1
    assert not out["home_exists"] and list(cwd.iterdir()) == []
