"""GEPA and COPRO over the persona, with the scripted LM: same interface, same budget, personas out."""

from __future__ import annotations

import logging
import sys

import dspy
import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.optimizers import trainset_from_store
from persona_agent.optimizers.copro import COPROPersonaOptimizer
from persona_agent.optimizers.factory import make_optimizer
from persona_agent.optimizers.gepa import GEPAPersonaOptimizer
from persona_agent.optimizers.simulation import metric_for
from persona_agent.programs.persona import persona_sections
from persona_agent.signatures import CategorizeArticle
from persona_agent.testing import ScriptedLM
from tests.support import museum_lm

from .test_persona_aligner import ANSWER, REACT, agent_for

GOOD = "## User profile\nWrites about museums and opera.\n\n## Agent instructions\nCheck memory."
BARE = "Act as a guide to museums and opera."  # no sections: the agent's instructions are gone
REPAIRED = "would be repaired: no headings: kept as profile, instructions unchanged"


def answers(call):
    system = call.messages[0]["content"]
    return {"category": "culture & arts" if "museums" in system else "politics"}


def test_gepa_finds_a_better_persona_within_budget(store, tmp_path):
    lm = museum_lm(GOOD)  # GEPA's reflection prompt (a raw LM call) proposes GOOD
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    optimizer = GEPAPersonaOptimizer(n=3, max_lm_calls=40, log_dir=tmp_path / "gepa-alice")
    with dspy.context(lm=lm):
        compiled = optimizer.compile(agent_for(store), trainset=trainset)
    trace = compiled.alignment_trace
    assert compiled.persona.text == GOOD and compiled.persona.version == 1
    assert len(lm.calls) <= 40 and trace["usage"]["calls"] == len(lm.calls)
    assert trace["strategy"] == "gepa" and (tmp_path / "gepa-alice").is_dir()
    assert max(trace["val_scores"]) == 1.0
    assert trace["persona_check"] == "ok"


def test_gepa_logs_to_its_run_folder_and_leaves_the_process_streams_alone(store, tmp_path):
    """gepa's own file logger tees sys.stdout into a file it later closes: a print from another thread then
    fails. Ours writes the same log without swapping the streams, so parallel compiles cannot clash."""
    streams = sys.stdout, sys.stderr
    seen = []
    optimizer = GEPAPersonaOptimizer(n=3, max_lm_calls=40, log_dir=tmp_path / "gepa-alice")
    metric = metric_for(optimizer.metric, agent_for(store))

    def watching(*args, **kwargs):
        seen.append((sys.stdout, sys.stderr))  # the streams while GEPA runs, from inside its evaluations
        return metric(*args, **kwargs)

    optimizer.metric = watching
    with dspy.context(lm=museum_lm(GOOD)):
        optimizer.compile(agent_for(store), trainset=trainset_from_store(store, "alice", CategorizeArticle, n=3))
    assert seen and all(pair == streams for pair in seen)
    assert (sys.stdout, sys.stderr) == streams
    log = (tmp_path / "gepa-alice" / "run_log.txt").read_text()
    assert "Iteration" in log


def test_gepa_holds_each_proposal_to_the_persona_constraints(store):
    lm = museum_lm(BARE)
    agent = agent_for(store)
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = GEPAPersonaOptimizer(n=3, max_lm_calls=40).compile(agent, trainset=trainset)
    sections = persona_sections(compiled.persona.text)
    assert sections["User profile"] == BARE  # the bare rewrite became the profile part ...
    assert sections["Agent instructions"] == persona_sections(agent.persona.text)["Agent instructions"]  # ... only
    trace = compiled.alignment_trace
    assert trace["constrained"] is True and trace["persona_check"] == "ok"
    assert trace["proposals"] == [
        {"proposed_chars": len(BARE), "note": "no headings: kept as profile, instructions unchanged"}
    ]
    assert max(trace["val_scores"]) == 1.0  # what was scored is the constrained persona, which names museums


def test_gepa_never_scores_a_rejected_proposal(store):
    lm = museum_lm("")  # an empty reflection: PersonaAligner rejects it, so the start persona stands in for it
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = GEPAPersonaOptimizer(n=3, max_lm_calls=20).compile(agent_for(store), trainset=trainset)
    assert compiled.persona.version == 0
    assert compiled.alignment_trace["proposals"] == [{"proposed_chars": 0, "note": "rejected: empty update"}]
    assert all(e["persona"] == compiled.persona.text for e in compiled.alignment_trace["evaluations"])


def test_unconstrained_gepa_flags_a_persona_that_lost_its_sections(store, caplog):
    lm = museum_lm(BARE)
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm), caplog.at_level(logging.WARNING, "persona_agent.optimizers.guard"):
        compiled = GEPAPersonaOptimizer(n=3, max_lm_calls=40, constrain=False).compile(
            agent_for(store), trainset=trainset
        )
    assert compiled.persona.text == BARE  # GEPA's search as published: it keeps the better scorer
    assert compiled.alignment_trace["persona_check"] == REPAIRED
    assert compiled.alignment_trace["proposals"] == []
    assert "GEPA persona for user alice" in caplog.text and "no headings" in caplog.text


# GEPA's reflection prompt handed back by the LM, with the user's interests in it (so it would score 1.0)
GEPA_ECHO = (
    "I provided an assistant with the following instructions to perform a task for me: writes about museums "
    "and opera. The following are examples of different task inputs provided to the assistant along with the "
    "assistant's response for each of them."
)


def test_gepa_rejects_a_proposal_that_echoes_its_own_prompt(store):
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=museum_lm(GEPA_ECHO)):
        compiled = GEPAPersonaOptimizer(n=3, max_lm_calls=40).compile(agent_for(store), trainset=trainset)
    assert compiled.persona.version == 0  # it scored better, but it is no persona
    (proposal,) = compiled.alignment_trace["proposals"]
    assert proposal["note"] == (
        "rejected: echoes GEPA's reflection prompt ('i provided an assistant with the following instructions')"
    )
    assert all(e["persona"] == compiled.persona.text for e in compiled.alignment_trace["evaluations"])


def test_unconstrained_gepa_flags_an_echo_of_its_own_prompt(store):
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=museum_lm(GEPA_ECHO)):
        compiled = GEPAPersonaOptimizer(n=3, max_lm_calls=40, constrain=False).compile(
            agent_for(store), trainset=trainset
        )
    assert compiled.persona.text == GEPA_ECHO
    assert compiled.alignment_trace["persona_check"].startswith("would be rejected: echoes GEPA's reflection prompt")


def examples_handed_back(call) -> str:
    """The reflection LM copying back only the examples block of its prompt (LaMP-2N user 8 in the
    evaluation), after a line that names museums, so it would outscore the start persona."""
    prompt = call.messages[-1]["content"]
    start = prompt.index("# Example 1")
    return "Writes about museums.\n" + prompt[start : prompt.index("```", start)].strip()


@pytest.mark.parametrize("constrain", [True, False])
def test_gepa_tells_its_examples_handed_back_from_a_persona(store, constrain):
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=museum_lm(examples_handed_back)):
        compiled = GEPAPersonaOptimizer(n=3, max_lm_calls=40, constrain=constrain).compile(
            agent_for(store), trainset=trainset
        )
    trace = compiled.alignment_trace
    if constrain:
        assert compiled.persona.version == 0 and trace["persona_check"] == "ok"
        notes = {p["note"] for p in trace["proposals"]}  # one per distinct proposal (its examples differ)
        assert notes == {"rejected: echoes GEPA's reflection prompt ('# Example 1')"}
    else:
        assert compiled.persona.text.startswith("Writes about museums.\n# Example 1\n## Inputs\n")
        assert "## Feedback\nThe user actually wanted {'category': 'culture & arts'}." in compiled.persona.text
        assert trace["persona_check"] == "would be rejected: echoes GEPA's reflection prompt ('# Example 1')"


def test_gepa_stops_at_a_small_budget(store):
    lm = ScriptedLM({REACT: {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}}, ANSWER: answers})
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = GEPAPersonaOptimizer(n=3, max_lm_calls=4).compile(agent_for(store), trainset=trainset)
    assert len(lm.calls) <= 4
    assert compiled.alignment_trace["stop_reason"] == "budget: max_lm_calls=4"
    assert compiled.persona.version == 0


def test_copro_searches_personas_by_score(store):
    proposals = {
        "basic_instruction -> proposed_instruction, proposed_prefix_for_output_field": {
            "proposed_instruction": GOOD,
            "proposed_prefix_for_output_field": "Category:",
        },
        "*": {"proposed_instruction": GOOD, "proposed_prefix_for_output_field": "Category:"},
    }
    lm = ScriptedLM(
        {REACT: {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}}, ANSWER: answers, **proposals}
    )
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = COPROPersonaOptimizer(n=3, breadth=2, depth=1, max_lm_calls=30).compile(
            agent_for(store), trainset=trainset
        )
    assert compiled.persona.text == GOOD
    assert compiled.alignment_trace["strategy"] == "copro"
    assert compiled.alignment_trace["persona_check"] == "ok"
    assert len(lm.calls) <= 30


LONG = GOOD.replace("museums and opera.", "museums and opera. " * 150)  # over PersonaAligner's 2,000-character cap


def copro_lm(instruction: str) -> ScriptedLM:
    """The agent finishes at once and answers by `answers`; COPRO's proposer always proposes `instruction`."""
    return ScriptedLM(
        {
            REACT: {"next_thought": "t", "next_tool_name": "finish", "next_tool_args": {}},
            ANSWER: answers,
            "*": {"proposed_instruction": instruction, "proposed_prefix_for_output_field": "Category:"},
        }
    )


def test_copro_scores_and_returns_proposals_as_constrained(store):
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=copro_lm(LONG)):
        compiled = COPROPersonaOptimizer(n=3, breadth=2, depth=1, max_lm_calls=30).compile(
            agent_for(store), trainset=trainset
        )
    text = compiled.persona.text
    assert len(text) <= 2000 and text.endswith("## Agent instructions\nCheck memory.")
    trace = compiled.alignment_trace
    assert trace["constrained"] is True and trace["persona_check"] == "ok"
    assert trace["proposals"] == [{"proposed_chars": len(LONG), "note": "profile shortened to the length cap"}]


def test_unconstrained_copro_flags_a_persona_over_the_cap(store, caplog):
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=copro_lm(LONG)), caplog.at_level(logging.WARNING, "persona_agent.optimizers.guard"):
        compiled = COPROPersonaOptimizer(n=3, breadth=2, depth=1, max_lm_calls=30, constrain=False).compile(
            agent_for(store), trainset=trainset
        )
    assert compiled.persona.text == LONG
    assert compiled.alignment_trace["persona_check"] == "would be repaired: profile shortened to the length cap"
    assert "COPRO persona for user alice" in caplog.text


# COPRO's list of attempts handed back as the instruction (LaMP-2M user 16 in the evaluation)
COPRO_ECHO = "[3] «Prefix #1: Tag:»\n[4] «Resulting Score #1: 33.33»\n[5] «Instruction #2: Write about museums.»"


@pytest.mark.parametrize("constrain", [True, False])
def test_copro_tells_an_echo_of_its_own_prompt_from_a_persona(store, constrain):
    lm = copro_lm(COPRO_ECHO)
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = COPROPersonaOptimizer(n=3, breadth=2, depth=1, max_lm_calls=30, constrain=constrain).compile(
            agent_for(store), trainset=trainset
        )
    trace = compiled.alignment_trace
    if constrain:
        assert compiled.persona.version == 0 and trace["persona_check"] == "ok"
        assert trace["proposals"] == [
            {"proposed_chars": len(COPRO_ECHO), "note": "rejected: echoes COPRO's prompt ('Prefix #1:')"}
        ]
    else:
        assert compiled.persona.text == COPRO_ECHO  # it names museums, so it outscored the start persona
        assert trace["persona_check"] == "would be rejected: echoes COPRO's prompt ('Prefix #1:')"


def test_make_optimizer():
    assert isinstance(make_optimizer("gepa", max_lm_calls=10), GEPAPersonaOptimizer)
    with pytest.raises(InvalidInputError, match="strategy"):
        make_optimizer("mipro")


def test_copro_budget_is_recorded_even_when_evaluate_swallows_it(store):
    lm = copro_lm(GOOD)
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = COPROPersonaOptimizer(n=3, breadth=2, depth=1, max_lm_calls=6).compile(
            agent_for(store), trainset=trainset
        )
    assert len(lm.calls) <= 6
    assert compiled.alignment_trace["stop_reason"] == "budget: max_lm_calls=5"


def test_copro_simulations_keep_the_time_cutoff(store):
    """COPRO scores through DSPy's Evaluate, which passes only example inputs: the cut-off must be one."""
    seen = []

    def react(call):
        seen.append(call.inputs["trajectory"])
        return {"next_thought": "t", "next_tool_name": "search_memory", "next_tool_args": {"query": "opera", "k": 10}}

    def answer(call):
        seen.append(call.inputs["trajectory"])
        return {"category": "politics"}

    lm = ScriptedLM(
        {REACT: react, ANSWER: answer, "*": {"proposed_instruction": GOOD, "proposed_prefix_for_output_field": "C:"}}
    )
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=1)  # the opera house row
    with dspy.context(lm=lm):
        COPROPersonaOptimizer(n=1, breadth=2, depth=1).compile(agent_for(store, max_iters=1), trainset=trainset)
    observed = "\n".join(seen)
    assert "Gallery shows forgotten painters" in observed
    assert "Opera house reopens" not in observed
