"""PersonaAligner with the scripted LM: the full loop, the untouched student, accept policies,
skipping, budgets and their estimate, concurrency between users."""

from __future__ import annotations

import json
import threading

import dspy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persona_agent.core.errors import InvalidInputError
from persona_agent.optimizers import PersonaAligner, trainset_from_store
from persona_agent.optimizers.budget import BudgetTooSmallError
from persona_agent.programs import PersonaAgent, init_persona
from persona_agent.programs.persona import persona_sections
from persona_agent.signatures import CategorizeArticle
from persona_agent.testing import ScriptedLM

REACT = "article, trajectory -> next_thought, next_tool_name, next_tool_args"
ANSWER = "article, trajectory -> category"
LOSS = "persona, request, simulated_response, ground_truth_response -> matches, critique"
GRADIENT = "persona, losses -> gradient"
UPDATE = "persona, gradient, max_chars -> new_persona"
NEW_PERSONA = "## User profile\nWrites about museums, galleries and opera: culture & arts.\n\n## Agent instructions\nCheck memory first."


def agent_for(store, user="alice", **kwargs) -> PersonaAgent:
    return PersonaAgent(
        CategorizeArticle,
        user_id=user,
        store=store,
        persona=init_persona(user, "Writes about politics."),
        allow_updates=False,
        **kwargs,
    )


def script(answer="politics", *, new_persona=NEW_PERSONA, react_steps=None) -> dict:
    def react(call):
        if react_steps is not None:
            return react_steps(call)
        return {"next_thought": "check", "next_tool_name": "search_memory", "next_tool_args": {"query": "art"}}

    def respond(call):
        system = call.messages[0]["content"]
        return {"category": "culture & arts" if "museums" in system else answer}

    return {
        REACT: react,
        ANSWER: respond,
        LOSS: {"matches": False, "critique": "The user files art stories under culture & arts."},
        GRADIENT: {"gradient": "- add: the user covers museums and galleries (culture & arts)"},
        UPDATE: {"new_persona": new_persona},
    }


def test_one_iteration_produces_a_new_persona_and_a_complete_trace(store):
    student = agent_for(store)
    before = {n: p.signature.instructions for n, p in student.named_predictors()}
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    assert [ex.category for ex in trainset] == ["culture & arts"] * 3
    lm = ScriptedLM(script())
    with dspy.context(lm=lm):
        compiled = PersonaAligner(n=3, iterations=1).compile(student, trainset=trainset)
    # the student is untouched
    assert {n: p.signature.instructions for n, p in student.named_predictors()} == before
    assert student.persona.version == 0 and not hasattr(student, "alignment_trace")
    # the new persona
    assert compiled.persona.version == 1 and compiled.persona.parent == 0 and compiled.persona.source == "aligned"
    assert persona_sections(compiled.persona.text)["User profile"].startswith("Writes about museums")
    assert compiled.react.signature.instructions.startswith(compiled.persona.text)
    # the trace is complete and JSON-serialisable
    trace = json.loads(json.dumps(compiled.alignment_trace))
    (step,) = trace["iterations"]
    assert step["persona"] == student.persona.text
    assert len(step["examples"]) == 3 and step["metric"] == 0.0
    assert {e["simulated"]["category"] for e in step["examples"]} == {"politics"}
    assert all(e["critique"].startswith("The user files art") for e in step["examples"])
    assert all(e["trajectory"][0]["tool"] == "search_memory" for e in step["examples"])
    assert step["gradient"].startswith("- add") and step["accepted"] is True
    assert trace["stop_reason"] == "completed" and trace["final_persona"]["version"] == 1
    assert trace["usage"]["calls"] == len(lm.calls)


def test_simulation_never_sees_the_example_itself(store):
    seen = []

    def react(call):
        seen.append(call)
        return {
            "next_thought": "look",
            "next_tool_name": "search_memory",
            "next_tool_args": {"query": "opera house renovation", "k": 10},
        }

    lm = ScriptedLM(script(react_steps=react))
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=1)  # the opera house row
    with dspy.context(lm=lm):
        compiled = PersonaAligner(n=1).compile(agent_for(store, max_iters=1), trainset=trainset)
    obs = compiled.alignment_trace["iterations"][0]["examples"][0]["trajectory"][0]["observation"]
    assert "Gallery shows forgotten painters" in obs
    assert "Opera house reopens" not in obs


def test_estimate_matches_the_calls_made(store):
    student = agent_for(store, max_iters=2)
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    for accept, iterations in (("always", 2), ("improve", 1)):
        aligner = PersonaAligner(n=3, iterations=iterations, accept=accept)
        lm = ScriptedLM(script(new_persona=NEW_PERSONA.replace("museums", "stadiums")))  # never fixes anything
        with dspy.context(lm=lm):
            compiled = aligner.compile(student, trainset=trainset)
        estimate = aligner.estimate(trainset, student=student)
        assert len(lm.calls) == estimate.max_lm_calls, (accept, estimate)
        assert compiled.alignment_trace["estimate"]["max_lm_calls"] == estimate.max_lm_calls
    # (3 examples x 3 agent steps + 3 losses + gradient + update) x 2 iterations
    assert PersonaAligner(n=3, iterations=2).estimate(trainset, student=student).max_lm_calls == 2 * (9 + 3 + 2)


def test_all_matching_batch_skips_gradient_and_update(store):
    lm = ScriptedLM(script(answer="culture & arts"))
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = PersonaAligner(n=3, iterations=3).compile(agent_for(store), trainset=trainset)
    trace = compiled.alignment_trace
    assert trace["stop_reason"] == "all_match"
    assert len(trace["iterations"]) == 1 and "gradient" not in trace["iterations"][0]
    assert compiled.persona.version == 0
    assert not any(c.spec.startswith(("persona, losses", "persona, gradient", "persona, request")) for c in lm.calls)


def test_improve_keeps_the_old_persona_when_the_metric_falls(store):
    student = agent_for(store)
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    valset = trainset[:2]

    def respond(call):  # the candidate persona makes the agent worse on the valset
        system = call.messages[0]["content"]
        return {"category": "travel" if "stadiums" in system else "culture & arts" if call.index % 2 else "politics"}

    bad = script(new_persona=NEW_PERSONA.replace("museums", "stadiums"))
    bad[ANSWER] = respond
    with dspy.context(lm=ScriptedLM(bad)):
        compiled = PersonaAligner(n=3, accept="improve").compile(student, trainset=trainset, valset=valset)
    step = compiled.alignment_trace["iterations"][0]
    assert step["accepted"] is False and step["candidate_metric"] == 0.0
    assert compiled.persona == student.persona


def test_improve_takes_a_better_persona(store):
    with dspy.context(lm=ScriptedLM(script())):
        compiled = PersonaAligner(n=3, accept="improve").compile(
            agent_for(store), trainset=trainset_from_store(store, "alice", CategorizeArticle, n=3)
        )
    step = compiled.alignment_trace["iterations"][0]
    assert step["accepted"] is True and step["candidate_metric"] == 1.0 and step["metric"] == 0.0
    assert compiled.persona.version == 1


@pytest.mark.parametrize("limit", [1, 5, 6])
def test_a_cap_below_one_round_is_refused_before_any_call(store, limit):
    lm = ScriptedLM(script())
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm), pytest.raises(BudgetTooSmallError) as info:
        PersonaAligner(n=3, max_lm_calls=limit).compile(agent_for(store), trainset=trainset)
    # one example: 3 tool steps + the answer, its loss, the gradient and the update
    assert info.value.field == "max_lm_calls" and info.value.minimum == 7 and "at least 7" in str(info.value)
    assert lm.calls == []


@pytest.mark.parametrize(("limit", "batch"), [(7, 1), (12, 2), (16, 2), (17, 3), (40, 3)])
def test_a_cap_plans_the_batch_so_the_round_completes_an_update(store, limit, batch):
    """Under the cap the batch shrinks until simulations, losses, gradient and update all fit; before, the
    simulations spent the cap and nothing was learned."""
    lm = ScriptedLM(script())
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    student = agent_for(store)
    aligner = PersonaAligner(n=3, max_lm_calls=limit, num_threads=3)
    estimate = aligner.estimate(trainset, student=student)
    assert (estimate.batch, estimate.capped) == (batch, batch < 3) and estimate.max_lm_calls <= limit
    with dspy.context(lm=lm):
        compiled = aligner.compile(student, trainset=trainset)
    trace = compiled.alignment_trace
    assert trace["stop_reason"] == "completed" and len(lm.calls) <= limit
    assert len(trace["iterations"][0]["examples"]) == batch and compiled.persona.text == NEW_PERSONA


def test_a_cap_keeps_the_batch_then_drops_rounds(store):
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    estimate = PersonaAligner(n=3, iterations=3, max_lm_calls=40).estimate(trainset, student=agent_for(store))
    assert (estimate.batch, estimate.iterations, estimate.max_lm_calls) == (3, 2, 34)


def test_a_token_limit_stops_cleanly_within_it(store):
    lm = ScriptedLM(script())
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    student = agent_for(store)
    with dspy.context(lm=lm):
        compiled = PersonaAligner(n=3, max_tokens=1, num_threads=1).compile(student, trainset=trainset)
    trace = compiled.alignment_trace
    assert trace["stop_reason"] == "budget: max_tokens=1" and len(lm.calls) == 1
    assert compiled.persona == student.persona  # no update was reached: the persona so far
    assert trace["usage"]["calls"] == len(lm.calls)


def test_budget_large_enough_for_the_estimate_completes(store):
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    student = agent_for(store)
    aligner = PersonaAligner(n=3)
    exact = aligner.estimate(trainset, student=student).max_lm_calls
    with dspy.context(lm=ScriptedLM(script())):
        compiled = PersonaAligner(n=3, max_lm_calls=exact).compile(student, trainset=trainset)
    assert compiled.alignment_trace["stop_reason"] == "completed"


def test_update_constraints(store):
    aligner = PersonaAligner(max_persona_chars=800)
    current = init_persona("alice", "Likes {topic} stories.").text
    text, note = aligner.constrain(current, "Likes art.")
    assert text is None and "topic" in note  # a template variable would be lost
    text, note = aligner.constrain(current, "## User profile\nLikes {topic}. " + "Detail. " * 100)
    assert len(text) <= 800 and "## Agent instructions" in text and "{topic}" in text
    text, note = aligner.constrain(current, "```\nLikes {topic} and art.\n```")
    assert persona_sections(text)["User profile"] == "Likes {topic} and art." and note.startswith("no headings")


def test_an_update_that_hands_back_the_aligner_prompt_is_rejected_even_under_always(store):
    """A small LM asked for a new persona may return the losses it was shown; under the paper's accept="always"
    nothing else would stop that text from going live."""
    echoed = (
        "## User profile\n1. request: article: Museum reopens\n   agent said: politics\n"
        "   user wanted: culture & arts\n   critique: The user files art stories under culture & arts."
    )
    student = agent_for(store)
    with dspy.context(lm=ScriptedLM(script(new_persona=echoed))):
        compiled = PersonaAligner(n=3, accept="always").compile(
            student, trainset=trainset_from_store(store, "alice", CategorizeArticle, n=3)
        )
    step = compiled.alignment_trace["iterations"][0]
    assert step["accepted"] is False and step["proposed_persona"] == echoed
    assert step["constraint"] == "echoes PersonaAligner's prompt ('agent said:')"
    assert compiled.persona == student.persona


def test_constraints_keep_what_only_looks_like_a_wrapper_or_a_heading():
    aligner = PersonaAligner()
    current = init_persona("alice", "Likes opera.").text
    code = "## User profile\nLikes opera.\n\n## Agent instructions\nAnswer as JSON:\n```json\n{}\n```"
    assert aligner.constrain(current, code) == (code, "ok")  # a closing fence that is part of the text stays
    quoted = '## User profile\nLikes opera.\n\n## Agent instructions\nSay "bravo"'
    assert aligner.constrain(current, quoted) == (quoted, "ok")
    assert aligner.constrain(current, f'"{quoted}"') == (quoted, "ok")  # a pair of quotes around it all goes
    text, note = aligner.constrain(
        current, "## User profile\nLikes opera.\n## Notes\nSits up front.\n## Agent instructions\nBe brief."
    )
    assert note == "ok" and "### Notes\nSits up front." in text  # another section is kept, as a subheading
    assert persona_sections(text)["User profile"] == "Likes opera.\n### Notes\nSits up front."


LINES = ["## User profile", "## Agent instructions", "## Notes", " ## Agent instructions", "```", "```json", '"']


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.one_of(st.sampled_from(LINES), st.text('ab {}#`"\r\t .', max_size=12)), max_size=12))
def test_constraints_are_idempotent(lines):
    """What `constrain` returns passes it again unchanged: a GEPA or COPRO persona held to the constraints
    during the search is what `persona_check` then calls ok."""
    aligner = PersonaAligner(max_persona_chars=900)
    current = init_persona("alice", "Likes opera; calls the user {name}.").text
    text, _ = aligner.constrain(current, "\n".join(lines))
    if text is not None:
        assert aligner.constrain(current, text) == (text, "ok")


def test_two_users_compiled_concurrently_never_exchange_personas(store):
    def answer(call):
        system = call.messages[0]["content"]
        return {"category": "sports" if "BOB" in system else "politics"}

    def update(call):
        owner = "BOB" if "BOB" in call.inputs["persona"] else "ALICE"
        return {"new_persona": f"## User profile\n{owner} v2\n\n## Agent instructions\nbe brief"}

    lm = ScriptedLM(
        {
            REACT: {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}},
            ANSWER: answer,
            LOSS: {"matches": False, "critique": "c"},
            GRADIENT: lambda call: {"gradient": "g " + ("BOB" if "BOB" in call.inputs["persona"] else "ALICE")},
            UPDATE: update,
        }
    )
    results = {}

    def run(user, marker):
        student = PersonaAgent(
            CategorizeArticle, user_id=user, store=store, persona=init_persona(user, marker), allow_updates=False
        )
        trainset = trainset_from_store(store, user, CategorizeArticle, n=3)
        with dspy.context(lm=lm):
            results[user] = PersonaAligner(n=3, iterations=2).compile(student, trainset=trainset)

    threads = [threading.Thread(target=run, args=a) for a in (("alice", "ALICE v1"), ("bob", "BOB v1"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert "ALICE" in results["alice"].persona.text and "BOB" not in results["alice"].persona.text
    assert "BOB" in results["bob"].persona.text and "ALICE" not in results["bob"].persona.text
    for user, other in (("alice", "BOB"), ("bob", "ALICE")):
        trace = json.dumps(results[user].alignment_trace)
        assert other not in trace
        assert results[user].alignment_trace["user_id"] == user


def test_bad_configuration(store):
    with pytest.raises(InvalidInputError, match="accept"):
        PersonaAligner(accept="sometimes")
    with pytest.raises(InvalidInputError, match="max_lm_calls"):
        PersonaAligner(max_lm_calls=0)
    with pytest.raises(InvalidInputError, match="trainset"):
        PersonaAligner().compile(agent_for(store), trainset=[])


def test_edit_mode_applies_added_and_removed_statements(store):
    edit = "persona, gradient -> add, remove"
    base = script()
    base.pop(UPDATE)
    base[edit] = {
        "add": ["Files museums, galleries and opera under culture & arts."],
        "remove": ["Writes about politics."],
    }
    with dspy.context(lm=ScriptedLM(base)):
        compiled = PersonaAligner(n=3, update="edit").compile(
            agent_for(store), trainset=trainset_from_store(store, "alice", CategorizeArticle, n=3)
        )
    profile = persona_sections(compiled.persona.text)["User profile"]
    assert profile == "- Files museums, galleries and opera under culture & arts."
    assert compiled.alignment_trace["config"]["update"] == "edit"


def test_apply_edits_keeps_instructions_and_skips_duplicates():
    from persona_agent.optimizers.persona_aligner import apply_edits

    text = init_persona("alice", "Likes politics. Likes sport!\nReads daily.").text
    edited = apply_edits(text, ["Prefers short headlines.", "reads daily"], ["likes sport"])
    sections = persona_sections(edited)
    assert sections["User profile"] == "Likes politics.\nReads daily.\n- Prefers short headlines."
    assert sections["Agent instructions"] == persona_sections(text)["Agent instructions"]
