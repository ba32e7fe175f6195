"""Compiling end to end with the scripted LM: the alignment batch, validation before any write, and a forget
that overtakes a running compile."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from persona_agent.compiling import (
    CompileCancelledError,
    CompileOptions,
    alignment_examples,
    compile_user,
    plan_compile,
    run_compile,
)
from persona_agent.core.errors import InvalidInputError, UnknownUserError
from persona_agent.signatures import PersonalizedRequest
from tests.support import CONCISE, SHORT, history, make_workspace, museum_lm, opera_history


@pytest.fixture
def workspace(tracking_home, embedder):
    ws = make_workspace(embedder)
    yield ws
    ws.close()


def test_the_batch_is_the_latest_real_responses_never_the_agents_own(workspace):
    store = workspace.store
    store.add("alice", history(4))
    store.add_interaction("alice", "what the agent answered", "agent text", task="agent", metadata={"source": "agent"})
    store.add_interaction("alice", "a note", "", task="note", metadata={"source": "agent"})
    store.add_interaction("alice", "asked, no answer yet", "")
    examples = alignment_examples(store, "alice", PersonalizedRequest, 3)
    assert [e.request for e in examples] == ["question 1", "question 2", "question 3"]
    assert all(e.response == "ok" and e.as_of is not None for e in examples)


def test_compile_registers_promotes_and_answers_with_the_new_persona(workspace):
    workspace.store.add("alice", history())
    assert workspace.respond("alice", "hi").text != SHORT
    plan = plan_compile(workspace, "alice", CompileOptions(n=2))
    assert plan.estimate["max_lm_calls"] == plan.estimate["simulate"] + 2 + 1 + 1 and len(plan.trainset) == 2
    assert "update_memory" not in plan.student.tool_names and "update_memory" in plan.base_agent.tool_names
    result = run_compile(workspace, plan)
    assert (result.version, result.parent, result.changed, result.promoted) == (1, 0, True, True)
    assert result.usage["calls"] <= plan.estimate["max_lm_calls"]
    assert workspace.registry.get("alice").text == CONCISE
    step = result.trace["iterations"][0]  # the trace rides on the result, as logged to MLflow
    assert len(step["examples"]) == 2 and step["gradient"] and step["accepted"]
    with tempfile.TemporaryDirectory() as tmp:
        logged = workspace.tracker.client.download_artifacts(result.mlflow_run_id, "alignment_trace.json", tmp)
        assert json.loads(Path(logged).read_text(encoding="utf-8")) == json.loads(json.dumps(result.trace))
    answer = workspace.respond("alice", "hi")  # the cache was invalidated by the promote
    assert (answer.text, answer.persona_version) == (SHORT, 1)
    assert workspace.store.count("alice") == 4  # simulations wrote nothing into memory


def test_bad_input_fails_before_anything_is_written(workspace):
    with pytest.raises(UnknownUserError):
        plan_compile(workspace, "nobody")
    workspace.store.add("bob", [{"query": "asked", "response": ""}])
    with pytest.raises(InvalidInputError) as info:
        plan_compile(workspace, "bob")
    assert info.value.field == "user_id" and workspace.registry.history("bob") == []
    workspace.store.add("bob", history(2))
    with pytest.raises(InvalidInputError) as info:
        plan_compile(workspace, "bob", CompileOptions(strategy="copro"))
    assert info.value.field == "strategy" and workspace.registry.history("bob") == []
    with pytest.raises(InvalidInputError) as info:
        CompileOptions.parse(n=0)
    assert info.value.field == "n"
    with pytest.raises(InvalidInputError) as info:
        CompileOptions.parse(strategy="magic")
    assert info.value.field == "strategy"


def test_a_forget_during_a_compile_discards_its_result(workspace):
    workspace.store.add("alice", history())
    plan = plan_compile(workspace, "alice")
    workspace.forget("alice")
    with pytest.raises(CompileCancelledError):
        run_compile(workspace, plan)
    assert workspace.registry.history("alice") == [] and workspace.store.count("alice") == 0


def test_a_budget_stops_the_compile_and_is_reported(workspace):
    workspace.store.add("alice", history())
    result = compile_user(workspace, "alice", CompileOptions(max_tokens=1))
    # the batch's three simulations start in parallel; none goes on once the first call's tokens are counted
    assert result.stop_reason == "budget: max_tokens=1" and result.usage["calls"] <= 3 and not result.changed


def test_a_call_cap_is_planned_into_the_batch_or_refused_before_any_call(workspace):
    workspace.store.add("alice", history())
    with pytest.raises(InvalidInputError) as info:
        plan_compile(workspace, "alice", CompileOptions(max_lm_calls=2))
    # one example's round: 4 agent steps, its loss, the gradient and the update
    assert info.value.field == "max_lm_calls" and "at least 7" in str(info.value)
    plan = plan_compile(workspace, "alice", CompileOptions(n=3, max_lm_calls=8))
    assert (plan.estimate["batch"], plan.estimate["capped"], plan.estimate["max_lm_calls"]) == (1, True, 7)
    result = run_compile(workspace, plan)
    assert (result.version, result.changed, result.stop_reason) == (1, True, "completed") and result.usage["calls"] <= 8


def test_the_edit_update_mode_is_passed_to_the_aligner_and_logged(tracking_home, embedder, tmp_path):
    from persona_agent.testing import ScriptedLM
    from tests.support import persona_script

    script = {**persona_script(), "persona, gradient -> add, remove": {"add": ["Wants concise answers."], "remove": []}}
    with make_workspace(embedder, lm=ScriptedLM(script), db_path=tmp_path / "edit.duckdb") as workspace:
        workspace.store.add("alice", history())
        result = compile_user(workspace, "alice", CompileOptions(update="edit"))
        assert result.changed and "Wants concise answers." in workspace.registry.get("alice").text
        run = workspace.tracker.client.get_run(result.mlflow_run_id)
        assert run.data.params["update"] == "edit"
    with pytest.raises(InvalidInputError) as info:
        CompileOptions.parse(update="patch")
    assert info.value.field == "update"


def test_a_flagged_strategy_persona_is_registered_but_not_made_live(tracking_home, embedder, tmp_path):
    """Unconstrained GEPA hands back a bare instruction (no sections): the version and its run are kept, the
    live persona is not changed until someone reviews it, unless `promote_flagged` asks otherwise. By default
    the same proposal is held to the persona's sections before it is scored, and goes live."""
    bare = "Act as a guide to museums and opera."
    published = {"strategy": "gepa", "max_lm_calls": 40, "constrain": False}
    with make_workspace(
        embedder,
        lm=museum_lm(bare),
        db_path=tmp_path / "flag.duckdb",
        mlflow_register_models=True,
        task_signature="CategorizeArticle",  # a labelled task: GEPA's metric
    ) as ws:
        for user in ("alice", "bob", "carol"):
            ws.store.add(user, opera_history())
        held = compile_user(ws, "alice", CompileOptions(**published))
        assert held.changed and not held.promoted and held.model_version is None
        assert held.persona_check == "would be repaired: no headings: kept as profile, instructions unchanged"
        assert ws.registry.get("alice", held.version).text == bare  # nothing lost: the version is kept
        assert ws.registry.live("alice").version == 0 and ws.program("alice")[1] == 0
        tags = ws.tracker.client.get_run(held.mlflow_run_id).data.tags
        assert tags["persona_check"] == held.persona_check
        assert ws.tracker.client.get_run(held.mlflow_run_id).data.params["constrain"] == "False"
        forced = compile_user(ws, "bob", CompileOptions(**published, promote_flagged=True))
        assert forced.promoted and forced.model_version is not None
        assert ws.registry.live("bob").version == forced.version
        kept = compile_user(ws, "carol", CompileOptions(strategy="gepa", max_lm_calls=40))
        assert kept.persona_check == "ok" and kept.promoted
        assert ws.registry.live("carol").version == kept.version
        assert ws.registry.get("carol").text.startswith(f"## User profile\n{bare}\n\n## Agent instructions")
        reviewed = ws.promote("alice", held.version)  # after review, by hand: registered then
        assert reviewed.live.version == held.version and reviewed.model_version is not None
