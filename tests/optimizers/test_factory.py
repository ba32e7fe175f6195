"""The one mapping from options to a strategy's arguments, and the typed trace's saved form."""

from __future__ import annotations

import dataclasses

import pytest

from persona_agent.optimizers import STRATEGIES, AlignmentTrace, PersonaAligner, exact_match, optimizer_for
from persona_agent.optimizers.copro import DEPTH, COPROPersonaOptimizer
from persona_agent.optimizers.gepa import MAX_LM_CALLS, GEPAPersonaOptimizer


def test_each_strategy_takes_its_own_options():
    aligner = optimizer_for("persona_aligner", n=2, iterations=3, accept="improve", update="edit", max_tokens=9)
    assert isinstance(aligner, PersonaAligner)
    assert (aligner.n, aligner.iterations, aligner.accept, aligner.update_mode) == (2, 3, "improve", "edit")
    assert aligner.budget.max_tokens == 9 and aligner.simulation.num_threads == 4
    gepa = optimizer_for("gepa", iterations=3, constrain=False, seed=5, num_threads=2, metric=exact_match)
    assert isinstance(gepa, GEPAPersonaOptimizer) and gepa.budget.max_lm_calls == MAX_LM_CALLS
    assert (gepa.constrain, gepa.seed, gepa.simulation.num_threads, gepa.metric) == (False, 5, 2, exact_match)
    copro = optimizer_for("copro", iterations=3, max_lm_calls=20)
    assert isinstance(copro, COPROPersonaOptimizer) and (copro.breadth, copro.depth, copro.num_threads) == (3, 3, 1)
    assert copro.budget.max_lm_calls == 20 - 3  # one call per depth round kept back for COPRO's proposals
    assert optimizer_for("copro", depth=DEPTH, breadth=2).depth == DEPTH
    assert STRATEGIES == ("persona_aligner", "gepa", "copro")


def test_an_unknown_strategy_is_refused():
    from persona_agent.core.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="strategy"):
        optimizer_for("mipro")


def test_a_trace_is_frozen_and_saves_only_what_its_strategy_records_in_order():
    persona = {"user_id": "u", "version": 0}
    trace = AlignmentTrace("copro", "u", persona, persona, "completed", {"calls": 1}, 0.5, proposals=())
    saved = ["strategy", "user_id", "initial_persona", "final_persona", "proposals", "stop_reason", "usage"]
    assert list(trace.to_dict()) == [*saved, "seconds"]
    assert trace.to_dict()["proposals"] == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        trace.stop_reason = "changed"  # type: ignore[misc]
    aligner = AlignmentTrace("persona_aligner", "u", persona, persona, "all_match", {}, 0.0, config={}, iterations=())
    assert list(aligner.to_dict())[2:6] == ["config", "initial_persona", "iterations", "stop_reason"]
