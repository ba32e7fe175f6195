"""PersonaAgent with the scripted LM: the persona as every predictor's instruction, the tool loop,
tool isolation and cut-off, error policy, and JSON state."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import dspy
import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.programs import PersonaAgent, init_persona
from persona_agent.programs.persona import GENERIC_INSTRUCTIONS
from persona_agent.signatures import CategorizeArticle
from persona_agent.testing import ScriptedLM

from .conftest import T0

REACT = "article, trajectory -> next_thought, next_tool_name, next_tool_args"
ANSWER = "article, trajectory -> category"


def step(tool: str, **args) -> dict:
    return {"next_thought": f"use {tool}", "next_tool_name": tool, "next_tool_args": args}


def system_prompt(call) -> str:
    return call.messages[0]["content"]


def test_persona_heads_every_predictor(store):
    persona = init_persona("alice", "Writes about politics and sport.")
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=persona)
    assert agent.persona == persona
    predictors = dict(agent.named_predictors())
    assert set(predictors) == {"react", "respond", "answer"}
    for pred in predictors.values():
        assert pred.signature.instructions.startswith(persona.text)
        assert CategorizeArticle.instructions in pred.signature.instructions
    assert "search_memory(query: string, k: integer)" in predictors["react"].signature.instructions


def test_with_persona_copies_and_never_touches_the_template(store):
    template = PersonaAgent(CategorizeArticle, user_id="alice", store=store)
    before = {n: p.signature.instructions for n, p in template.named_predictors()}
    assert all(i.startswith(GENERIC_INSTRUCTIONS) for i in before.values())
    mine = template.with_persona(init_persona("alice", "Loves politics."))
    assert {n: p.signature.instructions for n, p in template.named_predictors()} == before
    assert template.persona is None
    assert all(
        p.signature.instructions.startswith("## User profile\nLoves politics.") for _, p in mine.named_predictors()
    )
    assert mine.store is store  # stores are shared handles, not copied


def test_two_users_in_parallel_never_see_each_others_persona(store):
    """Regression test for the shared-signature-class leak (assigning `signature.instructions`)."""
    template = PersonaAgent(CategorizeArticle, user_id="alice", store=store, use_actions=False)
    seen: dict[str, list[str]] = {"alice": [], "bob": []}
    lock = threading.Lock()

    def answer(call):
        prompt = system_prompt(call)
        owner = "alice" if "ALICE-MARKER" in prompt else "bob" if "BOB-MARKER" in prompt else "?"
        with lock:
            seen.setdefault(owner, []).append(prompt)
        assert not ("ALICE-MARKER" in prompt and "BOB-MARKER" in prompt)
        return {"category": "politics" if owner == "alice" else "sports"}

    lm = ScriptedLM({ANSWER: answer})
    results: dict[str, list[str]] = {"alice": [], "bob": []}
    errors: list[BaseException] = []

    def run(user: str, marker: str) -> None:
        try:
            agent = PersonaAgent(CategorizeArticle, user_id=user, store=store, use_actions=False)
            agent = agent.with_persona(init_persona(user, marker))
            with dspy.context(lm=lm):
                for _ in range(10):
                    results[user].append(agent(article="Vote count tonight").category)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=a) for a in (("alice", "ALICE-MARKER"), ("bob", "BOB-MARKER"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == {"alice": ["politics"] * 10, "bob": ["sports"] * 10}
    assert "?" not in seen and len(seen["alice"]) == len(seen["bob"]) == 10
    assert all(p.signature.instructions.startswith(GENERIC_INSTRUCTIONS) for _, p in template.named_predictors())


def test_tool_loop_observations_and_typed_answer(store):
    lm = ScriptedLM(
        {
            REACT: [
                step("search_memory", query="budget vote in congress", k=2),
                step("recall_profile"),
                step("finish"),
            ],
            ANSWER: {"category": "politics"},
        }
    )
    store.set_profile("alice", "Mostly covers US politics.")
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=init_persona("alice", "p"))
    with dspy.context(lm=lm):
        out = agent(article="House passes the spending bill")
    assert out.category == "politics"
    assert [s["tool"] for s in out.trajectory] == ["search_memory", "recall_profile"]
    assert "Senate passes the infrastructure bill" in out.trajectory[0]["observation"]
    assert out.trajectory[1]["observation"] == "Mostly covers US politics."
    assert len(lm.calls) == 4  # three steps, one answer
    assert "observation_1: Mostly covers US politics." in lm.calls[-1].inputs["trajectory"]


def test_tools_cannot_reach_another_user(store):
    # Bob asks for a query that matches Alice's rows best: he still only ever sees his own.
    lm = ScriptedLM(
        {
            REACT: [step("search_memory", query="Senate voting law politics", k=10), step("finish")],
            ANSWER: {"category": "sports"},
        }
    )
    agent = PersonaAgent(CategorizeArticle, user_id="bob", store=store, persona=init_persona("bob", "p"))
    with dspy.context(lm=lm):
        out = agent(article="x")
    obs = out.trajectory[0]["observation"]
    assert "Championship final" in obs and "A quiet island" in obs
    assert "Senate" not in obs and "Governor" not in obs


def test_time_cutoff_holds_in_tools(store):
    lm = ScriptedLM(
        {
            REACT: [step("search_memory", query="anything at all", k=10), step("finish")],
            ANSWER: {"category": "politics"},
        }
    )
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=init_persona("alice", "p"))
    with dspy.context(lm=lm):
        out = agent(article="x", as_of=T0 + timedelta(days=2))
    obs = out.trajectory[0]["observation"]
    assert "Senate passes" in obs and "Governor signs" in obs
    assert "Star striker" not in obs and "bakery" not in obs


def test_failing_tool_becomes_an_observation(store):
    lm = ScriptedLM(
        {
            REACT: [step("search_memory", wrong_arg="x"), step("search_knowledge", query="q"), step("finish")],
            ANSWER: {"category": "politics"},
        }
    )
    # search_knowledge is not offered (no knowledge base): the LM cannot even name it, so the
    # scripted second step is an invalid step, which ends the loop and still answers.
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=init_persona("alice", "p"))
    with dspy.context(lm=lm):
        out = agent(article="x")
    assert out.category == "politics"
    assert out.trajectory[0]["observation"].startswith("error in search_memory")


def test_store_failure_inside_a_tool_is_an_observation(store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "search", broken)
    lm = ScriptedLM({REACT: [step("search_memory", query="q"), step("finish")], ANSWER: {"category": "politics"}})
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=init_persona("alice", "p"))
    with dspy.context(lm=lm):
        out = agent(article="x")
    assert out.trajectory[0]["observation"] == "error in search_memory: RuntimeError: disk on fire"


def test_update_memory_writes_only_when_allowed(store):
    lm = ScriptedLM(
        {
            REACT: [step("update_memory", note="prefers short headlines"), step("finish")],
            ANSWER: {"category": "politics"},
        }
    )
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=init_persona("alice", "p"))
    with dspy.context(lm=lm):
        agent(article="x")
    assert store.latest("alice", 1)[0].query == "prefers short headlines"
    evaluation = PersonaAgent(CategorizeArticle, user_id="alice", store=store, allow_updates=False)
    assert "update_memory" not in evaluation.tool_names


def test_async_path_gives_the_same_answer(store):
    import asyncio

    script = {REACT: [step("search_memory", query="vote"), step("finish")], ANSWER: {"category": "politics"}}
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=init_persona("alice", "p"))
    with dspy.context(lm=ScriptedLM(script)):
        sync = agent(article="x")
    with dspy.context(lm=ScriptedLM(script)):
        async_ = asyncio.run(agent.acall(article="x"))
    assert sync.category == async_.category == "politics"
    assert sync.trajectory == async_.trajectory


def test_json_state_round_trips_the_persona_without_pickle(store, tmp_path):
    persona = init_persona("alice", "Loves politics.").revise("## User profile\nv1\n\n## Agent instructions\nbe brief")
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=persona)
    path = tmp_path / "agent.json"
    agent.save(str(path))
    raw = path.read_text()
    state = json.loads(raw)  # plain JSON: no pickle anywhere
    assert state["persona_agent"]["persona"]["version"] == 1
    fresh = PersonaAgent(CategorizeArticle, user_id="alice", store=store)
    fresh.load(str(path))
    assert fresh.persona == persona
    assert {n: p.signature.instructions for n, p in fresh.named_predictors()} == {
        n: p.signature.instructions for n, p in agent.named_predictors()
    }
    with pytest.raises(InvalidInputError, match="user_id"):
        PersonaAgent(CategorizeArticle, user_id="bob", store=store).load(str(path))


def test_bad_arguments(store):
    with pytest.raises(InvalidInputError, match="max_iters"):
        PersonaAgent(CategorizeArticle, user_id="alice", store=store, max_iters=0)
    with pytest.raises(InvalidInputError, match="tools"):
        PersonaAgent(CategorizeArticle, user_id="alice", store=store, tools=("web_browse",))
    with pytest.raises(InvalidInputError, match=r"persona\.user_id"):
        PersonaAgent(CategorizeArticle, user_id="alice", store=store, persona=init_persona("bob"))
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store)
    with pytest.raises(InvalidInputError, match="missing input fields"):
        agent(headline="x")
