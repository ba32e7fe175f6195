"""Fitted evidence weights and the accept-if-better rule (issue 39)."""

from __future__ import annotations

import dspy
import pytest

from persona_agent.optimizers import PersonaAligner, trainset_from_store
from persona_agent.optimizers.evidence_fit import acceptance_key, fit_weights
from persona_agent.programs import PersonaAgent, init_persona
from persona_agent.programs.evidence import Evidence, EvidenceWeights
from persona_agent.signatures import CategorizeArticle
from persona_agent.testing import ScriptedLM
from tests.optimizers.test_persona_aligner import ANSWER, GRADIENT, LOSS, NEW_PERSONA, REACT, UPDATE, agent_for
from tests.programs.test_planned import fake_lm

LABELS = ("politics", "sports", "travel")


def evidence(lm: str, vote: str, prior: str) -> Evidence:
    def peak(label: str) -> dict[str, float]:
        return {x: 0.8 if x == label else 0.1 for x in LABELS}

    return Evidence(LABELS, peak(lm), peak(vote), peak(prior))


def test_fit_moves_to_the_evidence_that_predicts_this_user():
    records = [(evidence("politics", "sports", "travel"), "sports")] * 3 + [
        (evidence("travel", "travel", "sports"), "travel")
    ]
    fit = fit_weights(records, EvidenceWeights())
    assert fit.weights.vote > fit.weights.lm > 0 and fit.score == 1.0 and fit.baseline_score == 0.25
    floor = fit_weights(records, EvidenceWeights(), use_lm=False)
    assert floor.weights.lm == 0 and floor.score == 1.0


def test_fit_drops_the_evidence_that_misleads_and_keeps_ties_at_the_current_weights():
    records = [(evidence("sports", "travel", "politics"), "sports")] * 2
    fit = fit_weights(records, EvidenceWeights(lm=1.0, vote=0.5, prior=0.5))
    assert fit.weights.lm > 0 and fit.weights.vote == fit.weights.prior == 0
    # no LM, and memory says nothing either way: the current weights stay
    flat = Evidence(LABELS, dict.fromkeys(LABELS, 1 / 3), dict.fromkeys(LABELS, 1 / 3), dict.fromkeys(LABELS, 1 / 3))
    current = EvidenceWeights(lm=0.0, vote=1.0, prior=0.5)
    assert fit_weights([(flat, "sports")], current, use_lm=False).weights == current
    with pytest.raises(ValueError):
        fit_weights([], current)


def test_ordinal_answers_are_the_weighted_median():
    ev = Evidence(("1", "2", "3", "4", "5"), {"1": 0.4, "5": 0.6}, {}, {}, ordinal=True)
    assert ev.answer(EvidenceWeights()) == "5"
    ev = Evidence(("1", "2", "3", "4", "5"), {"1": 0.3, "3": 0.3, "5": 0.4}, {}, {}, ordinal=True)
    assert ev.answer(EvidenceWeights()) == "3"  # the mode would say 5; the median minimises absolute error
    gold_records = [{"score": 1.0, "evidence": ev.to_dict(), "ground_truth": {"rating": "3"}}]
    assert acceptance_key(gold_records, "rating", EvidenceWeights())[0] == 1.0


def test_an_update_that_only_ties_on_held_out_interactions_is_not_kept(store):
    """Accept-if-better: the candidate answers the held-out items exactly as the current persona does."""
    script = {
        REACT: {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
        ANSWER: {"category": "politics"},
        LOSS: {"matches": False, "critique": "wrong"},
        GRADIENT: {"gradient": "- add: museums"},
        UPDATE: {"new_persona": NEW_PERSONA},
    }
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=4)
    with dspy.context(lm=ScriptedLM(script)):
        compiled = PersonaAligner(n=2, accept="improve").compile(
            agent_for(store), trainset=trainset[2:], valset=trainset[:2]
        )
    step = compiled.alignment_trace["iterations"][0]
    assert step["accepted"] is False and step["candidate_metric"] == 0.5  # the same 1 of 2 as before
    assert compiled.persona.version == 0


def test_planned_compile_fits_the_weights_into_the_saved_state(store):
    """The model always says politics; the user's nearest past items say culture & arts."""
    lm, engine = fake_lm("politics", {"politics": 0.9, "culture": 0.1})
    critic = ScriptedLM(
        {
            LOSS: {"matches": False, "critique": "The user files art under culture & arts."},
            GRADIENT: {"gradient": "- add: art is culture & arts"},
            UPDATE: {"new_persona": NEW_PERSONA},
        }
    )
    student = PersonaAgent(
        CategorizeArticle,
        user_id="alice",
        store=store,
        persona=init_persona("alice", "Writes about politics."),
        mode="planned",
        k=3,
        allow_updates=False,
    )
    trainset = trainset_from_store(store, "alice", CategorizeArticle, n=3)
    with dspy.context(lm=lm):
        compiled = PersonaAligner(n=3, accept="improve", critic_lm=critic, num_threads=1).compile(
            student, trainset=trainset
        )
    fit = compiled.alignment_trace["evidence_fit"]
    assert fit["score"] > fit["baseline_score"]
    assert compiled.evidence_weights.vote + compiled.evidence_weights.prior > 0
    assert compiled.dump_state()["persona_agent"]["evidence_weights"] == compiled.evidence_weights.to_dict()
    assert student.evidence_weights == EvidenceWeights()  # the student is untouched
    assert len(engine.requests) == 6  # the batch, then the candidate on the batch: one call per answer
