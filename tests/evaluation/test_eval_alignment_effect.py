"""What alignment did: personas changed, stop reasons, answers changed against the unaligned agent."""

from __future__ import annotations

import json

from persona_agent.core.tasks import LAMP_2N, LAMP_3
from persona_agent.evaluation.alignment_effect import AlignmentEffect, alignment_effects


def _row(method: str, query: str, prediction: str | None, gold: str, user: str = "u") -> dict:
    return {"method": method, "user": user, "query_id": query, "prediction": prediction, "gold": gold}


def _setup(user: str, version: int, stop: str, error: str | None = None, **extra: str) -> dict:
    return {"user": user, "persona_version": version, "stop_reason": stop, "error": error, **extra}


def test_counts_against_the_unaligned_agent_by_hand():
    gold = {"q1": "politics", "q2": "sports", "q3": "business", "q4": "politics"}
    unaligned = [_row("no_alignment", q, p, gold[q]) for q, p in [("q1", "sports"), ("q2", "sports"), ("q3", "crime")]]
    aligned = [
        _row("persona_agent", q, p, gold[q])
        # q1 fixed, q2 broken (a failed answer scores as wrong), q3 one wrong label for another, q4 not compared
        for q, p in [("q1", "politics"), ("q2", None), ("q3", "travel"), ("q4", "politics")]
    ]
    setups = {
        "align:persona_aligner": [
            _setup("u", 1, "completed"),
            _setup("v", 0, "all_match"),
            _setup("w", 0, "completed"),
            _setup("x", 0, "None", error="LMError: boom"),
        ]
    }
    by_method = {"no_alignment": unaligned, "persona_agent": aligned}
    assert alignment_effects(LAMP_2N, by_method, setups) == [
        AlignmentEffect(
            strategy="persona_aligner",
            method="persona_agent",
            users=4,
            personas_changed=1,
            failed=1,
            stop_reasons={"all_match": 1, "completed": 2, "error: LMError": 1},
            queries=3,
            answers_changed=3,
            better=1,
            worse=1,
        )
    ]


def test_each_strategy_is_reported_on_its_own_and_absent_ones_are_left_out():
    unaligned = [_row("no_alignment", "q1", "4", "4"), _row("no_alignment", "q2", "2", "4")]
    gepa = [_row("persona_agent+gepa", "q1", "4", "4"), _row("persona_agent+gepa", "q2", "5", "4")]
    setups = {"align:gepa": [_setup("u", 2, "completed")]}
    effects = alignment_effects(LAMP_3, {"no_alignment": unaligned, "persona_agent+gepa": gepa}, setups)
    # q2: 2 -> 5 against gold 4 is a rating error of 2 -> 1: better
    assert [(e.method, e.personas_changed, e.queries, e.answers_changed, e.better, e.worse) for e in effects] == [
        ("persona_agent+gepa", 1, 2, 1, 1, 0)
    ]
    # without the unaligned agent there is nothing to compare answers with, but the set-up is still counted
    alone = alignment_effects(LAMP_3, {"persona_agent+gepa": gepa}, setups)
    assert (alone[0].users, alone[0].queries, alone[0].answers_changed) == (1, 0, 0)
    assert alignment_effects(LAMP_3, {"no_alignment": unaligned}, {}) == []


def test_persona_checks_are_counted_where_the_rows_record_them():
    flagged = "would be repaired: no headings: kept as profile, instructions unchanged"
    setups = {
        "align:copro": [
            _setup("u", 0, "budget", persona_check="ok"),
            _setup("v", 1, "budget", persona_check=flagged),
            _setup("w", 1, "budget"),  # written before persona_check was recorded: not counted either way
        ]
    }
    (effect,) = alignment_effects(LAMP_3, {}, setups)
    assert (effect.users, effect.personas_checked, effect.personas_flagged) == (3, 2, 1)


def test_the_report_prints_what_alignment_did(full_run):
    results = json.loads(full_run.result.results.read_text())
    predictions = {(r["method"], r["user"], r["query_id"]): r["prediction"] for r in results["predictions"]}
    setups = [r for r in results["setup"] if r["stage"] == "align:persona_aligner"]
    effect = next(e for e in results["alignment_effects"] if e["method"] == "persona_agent")
    changed = sum(
        prediction != predictions[("no_alignment", user, query)]
        for (method, user, query), prediction in predictions.items()
        if method == "persona_agent"
    )
    answered = next(s for s in results["summary"] if s["method"] == "persona_agent")["n_queries"]
    assert effect["users"] == len(setups) == len(results["users"]) and effect["queries"] == answered > 0
    assert effect["answers_changed"] == changed
    assert effect["personas_changed"] == sum(r["persona_version"] > 0 for r in setups)
    assert sum(effect["stop_reasons"].values()) == len(setups)
    markdown = full_run.result.markdown.read_text()
    assert f"| PersonaAgent | {len(setups)} | {effect['personas_changed']} | — | 0 | " in markdown
    # the planned agent's alignment rows say whether its evidence weights changed, as its saved state does
    planned = [r for r in results["setup"] if r["stage"] == "align:persona_aligner:planned"]
    states = {
        s["user_id"]: s for s in (json.loads(p.read_text()) for p in (full_run.result.run_dir / "state").glob("*.json"))
    }
    assert planned and all(isinstance(r["weights_changed"], bool) for r in planned)
    fits = [s["alignments"]["persona_aligner:planned"]["trace"]["evidence_fit"] for s in states.values()]
    assert sorted(r["weights_changed"] for r in planned) == sorted(bool(f and f["adopted"]) for f in fits)
    planned_effect = next(e for e in results["alignment_effects"] if e["method"] == "planned")
    assert planned_effect["weights_recorded"] == len(planned)
    # and the planned agent's goal is checked criterion by criterion (these runs are far too small to meet it)
    goal = results["goal"]
    assert goal["met"] is False and [c["name"] for c in goal["criteria"]][:1] == ["queries"]
    assert "Goal check of the planned agent: **not met**" in markdown and "| queries | no |" in markdown
    # GEPA and COPRO rows record what PersonaAligner's checks say of their (well-formed) personas
    for strategy in ("gepa", "copro"):
        rows = [r for r in results["setup"] if r["stage"] == f"align:{strategy}"]
        assert [r["persona_check"] for r in rows] == ["ok"] * len(rows)
        found = next(e for e in results["alignment_effects"] if e["strategy"] == strategy)
        assert (found["personas_checked"], found["personas_flagged"]) == (len(rows), 0)
    assert "PersonaAgent + GEPA 0 of 2; PersonaAgent + COPRO 0 of 2." in markdown
    # the evaluation runs GEPA and COPRO as published (unconstrained), as its committed rows were made
    states = [json.loads(p.read_text()) for p in (full_run.result.run_dir / "state").glob("*.json")]
    traces = [s["alignments"][k]["trace"] for s in states for k in ("gepa", "copro")]
    assert len(traces) == 4 and all(t["constrained"] is False for t in traces)
    assert effect["personas_checked"] == 0  # PersonaAligner constrains its own personas: nothing to check


def test_answers_under_another_profile_build_are_not_counted_as_alignment_effects():
    gold = {"q1": "politics", "q2": "sports"}
    unaligned = [_row("no_alignment", "q1", "sports", "politics"), _row("no_alignment", "q2", "sports", "sports")]
    # q2's aligned answer came after the user's profile was rebuilt: its change may be the profile's doing
    gepa = [
        _row("persona_agent+gepa", "q1", "politics", gold["q1"]),
        {**_row("persona_agent+gepa", "q2", "crime", gold["q2"]), "profile_generation": 2},
    ]
    (effect,) = alignment_effects(LAMP_2N, {"no_alignment": unaligned, "persona_agent+gepa": gepa}, {})
    assert (effect.queries, effect.answers_changed, effect.better, effect.worse) == (1, 1, 1, 0)
    assert effect.profile_mismatch == 1


def test_planned_alignment_counts_the_evidence_weights_it_changed():
    unaligned = [_row("planned_no_alignment", "q1", "sports", "politics")]
    aligned = [_row("planned", "q1", "politics", "politics")]
    setups = {
        "align:persona_aligner:planned": [
            _setup("u", 0, "all_match", weights_changed=True),
            _setup("v", 0, "completed", weights_changed=False),
            _setup("w", 0, "all_match"),  # a row from before it was recorded
        ]
    }
    by_method = {"planned_no_alignment": unaligned, "planned": aligned}
    (effect,) = alignment_effects(LAMP_2N, by_method, setups)
    assert (effect.personas_changed, effect.weights_recorded, effect.weights_changed) == (0, 2, 1)
    assert (effect.answers_changed, effect.better) == (1, 1)
