"""What alignment did, per strategy: how many personas it changed, why it stopped, and which answers it changed.

A mean accuracy cannot say whether alignment did anything: an aligner that leaves every persona as it was
scores exactly like `no_alignment`, and one that rewrites every persona can too. This compares each aligned
PersonaAgent with the same agent under the unaligned persona (`no_alignment`), query by query, and counts
from the alignment set-up rows how many personas changed (`persona_version > 0`: `Persona.revise` bumps the
version only when the text changes) and how each alignment stopped. GEPA and COPRO rows also say what
PersonaAligner's constraints make of the persona they returned (`persona_check`, recorded since it existed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from persona_agent.core.tasks import TaskSpec
from persona_agent.evaluation.head_to_head import count_signs, same_profile, scored_by_query, sign_test
from persona_agent.evaluation.plan import METHOD_SPECS

UNALIGNED = "no_alignment"  # the ReAct agent's; a method's own is `MethodSpec.unaligned`

Row = dict[str, Any]


@dataclass(frozen=True)
class AlignmentEffect:
    """One alignment strategy's effect, as PersonaAgent `method` under it.

    `queries` are those both `method` and `no_alignment` answered under the same build of the user's profile;
    of them `answers_changed` got a different answer, which scored `better` or `worse` (the rest of the changed
    answers scored the same, e.g. one wrong label for another). `profile_mismatch` more were answered by both
    under different builds of the profile (a resumed run rebuilt it), so a changed answer there may come from the
    profile rather than from alignment: they are left out. Of the users aligned, `personas_checked` carry a
    `persona_check` (GEPA/COPRO rows since it was recorded) and `personas_flagged` of those fail it. A planned
    agent's alignment may also change its evidence weights: `weights_changed` of the `weights_recorded` set-up
    rows that say so (recorded since the planned mode's rows carry it).
    """

    strategy: str
    method: str
    users: int
    personas_changed: int
    failed: int
    stop_reasons: dict[str, int]
    queries: int
    answers_changed: int
    better: int
    worse: int
    profile_mismatch: int = 0
    personas_checked: int = 0
    personas_flagged: int = 0
    weights_recorded: int = 0
    weights_changed: int = 0

    @property
    def p_value(self) -> float:
        """The two-sided sign test of better against worse answers (1.0 when none changed score)."""
        return sign_test(self.better, self.worse)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "p_value": round(self.p_value, 4)}


def alignment_effects(
    task: TaskSpec, by_method: Mapping[str, Sequence[Row]], setups_by_stage: Mapping[str, Sequence[Row]]
) -> list[AlignmentEffect]:
    """One entry per PersonaAgent strategy with predictions or alignment set-up rows, in `METHOD_SPECS` order."""
    effects = []
    for spec in METHOD_SPECS:
        if spec.group != "persona_agent" or spec.persona != "aligned" or spec.strategy is None:
            continue
        unaligned_rows = by_method.get(spec.unaligned, ())
        unaligned = {(r["user"], r["query_id"]): r for r in unaligned_rows}
        unaligned_scores = scored_by_query(task, unaligned_rows) if unaligned_rows else {}
        rows = by_method.get(spec.name, ())
        setups = setups_by_stage.get(f"align:{spec.alignment_key}", ())
        if not rows and not setups:
            continue
        scores = scored_by_query(task, rows) if rows else {}
        both = [r for r in rows if (r["user"], r["query_id"]) in unaligned]
        common = [r for r in both if same_profile(r, unaligned[r["user"], r["query_id"]])]
        changed = [r for r in common if r["prediction"] != unaligned[r["user"], r["query_id"]]["prediction"]]
        diffs = [scores[key] - unaligned_scores[key] for key in ((r["user"], r["query_id"]) for r in changed)]
        better, worse = count_signs(diffs)
        effects.append(
            AlignmentEffect(
                strategy=spec.strategy,
                method=spec.name,
                users=len(setups),
                personas_changed=sum((r.get("persona_version") or 0) > 0 for r in setups),
                failed=sum(r.get("error") is not None for r in setups),
                stop_reasons=dict(sorted(Counter(_stop_reason(r) for r in setups).items())),
                queries=len(common),
                answers_changed=len(changed),
                better=better,
                worse=worse,
                profile_mismatch=len(both) - len(common),
                personas_checked=sum(r.get("persona_check") is not None for r in setups),
                personas_flagged=sum(r.get("persona_check") not in (None, "ok") for r in setups),
                weights_recorded=sum("weights_changed" in r for r in setups),
                weights_changed=sum(bool(r.get("weights_changed")) for r in setups),
            )
        )
    return effects


def _stop_reason(setup: Row) -> str:
    """A failed alignment has no stop reason of its own: name the error type that stopped it instead."""
    if setup.get("error") is not None:
        return "error: " + str(setup["error"]).split(":", 1)[0]
    return str(setup.get("stop_reason"))
