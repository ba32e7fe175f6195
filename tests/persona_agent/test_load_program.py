"""`load_program` and saved programs: the registry fast path, the cache, schema upgrades and clear failures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import dspy
import pytest

import persona_agent
from persona_agent.core.config import Settings
from persona_agent.core.errors import PersonaNotFoundError, ProgramFormatError
from persona_agent.programs import PersonaAgent, init_persona
from persona_agent.programs.evidence import EvidenceWeights
from persona_agent.programs.persona_agent import STATE_KEY
from persona_agent.programs.saved import (
    SCHEMA_VERSION,
    ProgramFactory,
    program_document,
    read_document,
    write_document,
)
from persona_agent.signatures import CategorizeArticle, PersonalizedRequest
from persona_agent.testing import ScriptedLM
from tests.support import LONG, SECRET, SHORT, history, make_workspace

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def workspace(embedder):
    ws = make_workspace(embedder)
    ws.store.add("alice", history())
    yield ws
    ws.close()


def test_the_live_version_loads_from_the_registry_and_follows_promote(workspace):
    agent = workspace.load_program("alice")
    assert agent.persona.version == 0 and agent.persona.source == "init"  # the initial persona was made
    assert workspace.registry.live("alice").version == 0
    workspace.registry.add("alice", "## User profile\nconcise please\n\n## Agent instructions\nBe brief.", parent=0)
    with workspace.lm_context():
        assert agent(request="hi").response == LONG
    workspace.promote("alice", 1)
    agent = workspace.load_program("alice")
    assert agent.persona.version == 1
    with workspace.lm_context():
        assert agent(request="hi").response == SHORT
    assert workspace.load_program("alice", 0).persona.version == 0
    assert workspace.load_program("alice", "latest").persona.version == 1
    with pytest.raises(PersonaNotFoundError):
        workspace.load_program("alice", 7)


def test_a_loaded_program_is_the_callers_own_copy_and_warm_loads_hit_the_cache(workspace):
    first = workspace.load_program("alice")
    misses = workspace.programs.misses
    started = time.perf_counter()
    second = workspace.load_program("alice")
    warm = time.perf_counter() - started
    assert workspace.programs.misses == misses and workspace.programs.hits >= 1
    assert second is not first and warm < 0.05
    first.respond.demos.append(dspy.Example(request="x", response="y"))  # the caller changes its copy ...
    assert workspace.load_program("alice").respond.demos == []  # ... the cache does not see it


def test_the_package_level_load_program_opens_a_default_workspace(embedder):
    settings = Settings()
    ws = make_workspace(embedder)
    ws.store.add("dora", history(2))
    ws.close()
    try:  # the default workspace reads the existing store; nothing here needs its embedder
        agent = persona_agent.load_program("dora", settings=settings)
        assert isinstance(agent, PersonaAgent) and agent.user_id == "dora"
        assert persona_agent.default_workspace(settings) is persona_agent.default_workspace(settings)
    finally:
        persona_agent.close_default_workspaces()


def test_a_document_round_trips_without_any_lm(embedder):
    agent = PersonaAgent(CategorizeArticle, user_id="erin", persona=init_persona("erin", "Covers sport."))
    agent.respond.lm = ScriptedLM({})  # a predictor-level LM, as optimizers sometimes leave
    agent.respond.lm.kwargs["api_key"] = SECRET
    document = program_document(agent, scores={"metric_final": 1.0})
    text = json.dumps(document)
    assert SECRET not in text and all(document[n]["lm"] is None for n in ("react", "respond"))
    meta = document[STATE_KEY]
    assert meta["schema_version"] == SCHEMA_VERSION and meta["program"]["signature"]["name"] == "CategorizeArticle"
    rebuilt = ProgramFactory().build(json.loads(text))
    assert rebuilt.task_signature is CategorizeArticle and rebuilt.persona == agent.persona
    assert rebuilt.respond.lm is None
    assert rebuilt.respond.signature.instructions == agent.respond.signature.instructions


def test_a_legacy_schema_1_file_loads():
    document = read_document(FIXTURES / "program_v1.json")  # what PersonaAgent.save() wrote before
    assert document[STATE_KEY]["upgraded_from"] == 1 and document[STATE_KEY]["schema_version"] == SCHEMA_VERSION
    agent = ProgramFactory().build(document)
    assert agent.user_id == "carol" and agent.task_signature is CategorizeArticle
    assert (agent.persona.version, agent.persona.parent, agent.persona.source) == (2, 1, "aligned")
    assert agent.respond.signature.instructions.startswith("## User profile\nWrites about food and travel.")
    lm = ScriptedLM({"article, trajectory -> category": {"category": "travel"}})
    with dspy.context(lm=lm):
        assert agent(article="A quiet island").category == "travel"


def test_newer_or_unknown_programs_fail_with_a_clear_message(tmp_path):
    agent = PersonaAgent(PersonalizedRequest, user_id="fred")
    document = program_document(agent)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({**document, STATE_KEY: {**document[STATE_KEY], "schema_version": SCHEMA_VERSION + 1}}))
    with pytest.raises(ProgramFormatError, match=r"pip install -U dspy-persona"):
        read_document(newer)
    signature = {"name": "MyTask", "inputs": ["a"], "outputs": ["b"]}
    custom = {**document, STATE_KEY: {**document[STATE_KEY], "program": {"signature": signature}}}
    with pytest.raises(ProgramFormatError, match="signature="):
        ProgramFactory().build(custom)
    garbage = tmp_path / "garbage.json"
    garbage.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(ProgramFormatError, match="not a saved PersonaAgent program"):
        read_document(garbage)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ProgramFormatError):
        read_document(broken)


def test_a_saved_file_loads_through_load_program(workspace, tmp_path):
    agent = workspace.load_program("alice")
    path = tmp_path / "alice.json"
    path.write_text(json.dumps(program_document(agent)))
    loaded = workspace.load_program("alice", path)
    assert loaded.persona == agent.persona and loaded.store is workspace.store
    with pytest.raises(ValueError):
        workspace.load_program("carol", path)


def test_every_task_signature_setting_names_a_signature_saved_programs_load_with():
    from typing import get_args

    from persona_agent.core.config import TaskSignatureName
    from persona_agent.programs.saved import KNOWN_SIGNATURES

    assert set(get_args(TaskSignatureName)) == set(KNOWN_SIGNATURES)
    assert Settings(task_signature="TagMovie").task_signature == "TagMovie"
    with pytest.raises(ValueError, match="task_signature"):
        Settings(task_signature="NoSuchTask")


def test_a_schema_2_document_written_by_the_previous_version_still_loads():
    # program_v2.json: what program_document wrote before documents became DSPy state files (schema 2).
    document = read_document(FIXTURES / "program_v2.json")
    assert document[STATE_KEY]["upgraded_from"] == 2 and set(document) == {"react", "respond", "metadata", STATE_KEY}
    agent = ProgramFactory().build(document)
    assert agent.user_id == "dave" and agent.task_signature is CategorizeArticle and agent.task == "LaMP-2N"
    assert (agent.persona.version, agent.persona.parent, agent.persona.source) == (3, 2, "aligned")
    assert document[STATE_KEY]["scores"] == {"metric_final": 1.0}
    with dspy.context(lm=ScriptedLM({"article, trajectory -> category": {"category": "science & technology"}})):
        assert agent(article="A new telescope").category == "science & technology"


def test_a_saved_program_is_a_dspy_state_file_a_fresh_agent_loads(workspace, tmp_path):
    """DSPy's own `Module.load` reads program.json into a fresh `PersonaAgent`: the persona comes with it."""
    workspace.load_program("alice")  # the initial version
    compiled = workspace.registry.program("alice", "live")
    path = write_document(compiled, tmp_path / "program.json")
    fresh = PersonaAgent(user_id="alice")
    assert fresh.persona is None
    fresh.load(str(path))
    assert fresh.persona == workspace.load_program("alice").persona
    assert fresh.respond.signature.instructions == workspace.load_program("alice").respond.signature.instructions
    with dspy.context(lm=ScriptedLM({"request, trajectory -> response": {"response": SHORT}})):
        assert fresh(request="How are you?").response == SHORT


def test_the_planned_mode_and_evidence_weights_survive_a_save_and_both_loaders(tmp_path):
    weights = EvidenceWeights(lm=0.5, vote=2.0, prior=0.25)
    agent = PersonaAgent(CategorizeArticle, user_id="gina", mode="planned", k=3, evidence_weights=weights)
    path = write_document(program_document(agent), tmp_path / "program.json")
    rebuilt = ProgramFactory().build(read_document(path))  # load_program's path
    assert (rebuilt.mode, rebuilt.k, rebuilt.evidence_weights) == ("planned", 3, weights)
    fresh = PersonaAgent(CategorizeArticle, user_id="gina")
    fresh.load(str(path))  # DSPy's own Module.load
    assert (fresh.mode, fresh.evidence_weights) == ("planned", weights)


def test_older_documents_keep_the_mode_and_evidence_weights_they_held(tmp_path):
    weights = EvidenceWeights(lm=0.0, vote=1.5)
    agent = PersonaAgent(CategorizeArticle, user_id="hal", mode="planned", evidence_weights=weights)
    agent.save(str(tmp_path / "agent.json"))  # schema 1: DSPy's own save of the agent
    rebuilt = ProgramFactory().build(read_document(tmp_path / "agent.json"))
    assert (rebuilt.mode, rebuilt.evidence_weights) == ("planned", weights)
    old = json.loads((FIXTURES / "program_v2.json").read_text())  # schema 2, with the agent's entry in its state
    old["state"][STATE_KEY] = {"mode": "planned", "evidence_weights": {"vote": 1.5}}
    old["program"] = {**old["program"], "mode": "planned", "k": 4}
    rebuilt = ProgramFactory().build(old)
    assert (rebuilt.mode, rebuilt.k, rebuilt.evidence_weights) == ("planned", 4, EvidenceWeights(vote=1.5))
