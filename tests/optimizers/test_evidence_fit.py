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
from tests.programs.test_planned import LogprobEngine, fake_lm

LABELS = ("politics", "sports", "travel")


def evidence(lm: str, vote: str, prior: str) -> Evidence:
    def peak(label: str) -> dict[str, float]:
        return {x: 0.8 if x == label else 0.1 for x in LABELS}

    return Evidence(LABELS, peak(lm), peak(vote), peak(prior))


def test_fit_moves_to_the_evidence_that_predicts_this_user():
    records = [(evidence("politics", "sports", "travel"), "sports")] * 6 + [
        (evidence("travel", "travel", "sports"), "travel")
    ]
    fit = fit_weights(records, EvidenceWeights())
    assert fit.adopted and fit.cv_score == 1.0
    assert fit.weights.vote > fit.weights.lm > 0 and fit.score == 1.0 and fit.baseline_score == 1 / 7
    floor = fit_weights(records, EvidenceWeights(), use_lm=False)
    assert floor.weights.lm == 0 and floor.score == 1.0


def test_a_fit_on_too_few_records_keeps_the_current_weights():
    """One to three records let the grid fit anything (dev runs: such fits moved answers the wrong way)."""
    records = [(evidence("politics", "sports", "travel"), "sports")] * 3
    fit = fit_weights(records, EvidenceWeights())
    assert fit.proposed.vote > 0 and fit.score == 1.0  # the grid found weights that fit these three...
    assert not fit.adopted and fit.weights == EvidenceWeights() and fit.cv_score is None  # ...and they stay unused
    assert fit_weights(records, EvidenceWeights(), min_records=3).adopted


def test_a_fit_that_does_not_survive_leave_one_out_keeps_the_current_weights():
    """Each source is right on exactly one pattern: any weights fitted on the rest miss the record left out."""
    records = [
        (evidence("politics", "sports", "travel"), "politics"),
        (evidence("politics", "sports", "travel"), "sports"),
        (evidence("politics", "sports", "travel"), "travel"),
    ] * 2
    fit = fit_weights(records, EvidenceWeights())
    assert fit.cv_score is not None and fit.cv_score <= fit.baseline_score
    assert not fit.adopted and fit.weights == EvidenceWeights()


def test_fit_drops_the_evidence_that_misleads_and_keeps_ties_at_the_current_weights():
    records = [(evidence("sports", "travel", "politics"), "sports")] * 6
    current = EvidenceWeights(lm=1.0, vote=0.5, prior=0.5)
    fit = fit_weights(records, current)
    assert fit.proposed.lm > 0 and fit.proposed.vote == fit.proposed.prior == 0  # the truth's probability says so
    assert not fit.adopted and fit.weights == current  # but the current weights already answer every record
    # no LM, and memory says nothing either way: the current weights stay
    flat = Evidence(LABELS, dict.fromkeys(LABELS, 1 / 3), dict.fromkeys(LABELS, 1 / 3), dict.fromkeys(LABELS, 1 / 3))
    current = EvidenceWeights(lm=0.0, vote=1.0, prior=0.5)
    assert fit_weights([(flat, "sports")] * 6, current, use_lm=False).weights == current
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


def planned_alice(store) -> tuple[ScriptedLM, PersonaAgent, list]:
    """A critic that proposes an art-lover persona, alice's planned agent trusting the model alone (so that her
    memory's evidence is what a fit can add), and her latest three interactions."""
    critic = ScriptedLM(
        {
            LOSS: {"matches": False, "critique": "The user files art under culture & arts."},
            GRADIENT: {"gradient": "- add: museums"},
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
        evidence_weights=EvidenceWeights(),
    )
    return critic, student, trainset_from_store(store, "alice", CategorizeArticle, n=3)


def test_planned_compile_fits_the_weights_into_the_saved_state(store):
    """The model always says politics; the user's nearest past items say culture & arts."""
    lm, engine = fake_lm("politics", {"politics": 0.9, "culture": 0.1})
    critic, student, trainset = planned_alice(store)
    with dspy.context(lm=lm):
        compiled = PersonaAligner(n=3, accept="improve", critic_lm=critic, num_threads=1, min_fit_records=3).compile(
            student, trainset=trainset
        )
    fit = compiled.alignment_trace["evidence_fit"]
    assert fit["adopted"] and fit["cv_score"] > fit["baseline_score"]
    assert compiled.evidence_weights.vote + compiled.evidence_weights.prior > 0
    assert compiled.dump_state()["persona_agent"]["evidence_weights"] == compiled.evidence_weights.to_dict()
    assert student.evidence_weights == EvidenceWeights()  # the student is untouched
    assert len(engine.requests) == 6  # the batch, then the candidate on the batch: one call per answer


class PersonaSensitiveEngine(LogprobEngine):
    """Politics either way; the new persona only moves some probability towards the truth."""

    def complete(self, request):
        text = str(request.system)
        self.top = {"politics": 0.6, "culture": 0.4} if "museums" in text else {"politics": 0.9, "culture": 0.1}
        return super().complete(request)


def test_an_update_that_only_raises_the_truths_probability_is_not_kept(store):
    """Accept-if-better is by the metric: the same wrong answers with a likelier truth do not change a persona."""
    engine = PersonaSensitiveEngine("politics", None)
    critic, student, trainset = planned_alice(store)
    with dspy.context(lm=dspy.LM("fake/model", engine=engine, cache=False)):
        compiled = PersonaAligner(n=3, accept="improve", critic_lm=critic, num_threads=1, fit_evidence=False).compile(
            student, trainset=trainset
        )
    step = compiled.alignment_trace["iterations"][0]
    assert step["proposed_persona"] == NEW_PERSONA and step["candidate_metric"] == step["metric"]
    assert step["accepted"] is False and compiled.persona.version == 0
