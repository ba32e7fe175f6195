"""`PersonaAligner`: the paper's test-time user-preference alignment as a DSPy teleprompter.

Per iteration: simulate the agent under the current persona on the user's latest interactions
(in parallel), state a textual loss per example, turn the batch's losses into one textual gradient,
and rewrite the persona with it. The student is never mutated; the result is a new `PersonaAgent`
carrying `alignment_trace` (plain JSON data).

Error policy (as GEPA's adapters): one example whose simulation fails gets a failure score and a
critique saying so; systemic errors (no LM, a spent budget) stop the compile. A spent budget stops
cleanly: the persona so far (under accept="improve", the best by the metric) is returned with the
reason in the trace.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dspy
from dspy.teleprompt import Teleprompter

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.usage import track_usage
from persona_agent.optimizers.budget import Budget, BudgetExhaustedError, CallPlan, fit_calls
from persona_agent.optimizers.evidence_fit import MIN_RECORDS, acceptance_key, evidence_records, fit_weights
from persona_agent.optimizers.guard import PersonaGuard
from persona_agent.optimizers.simulation import (
    Metric,
    Simulation,
    ask,
    jsonable,
    mean_score,
    metric_for,
    render,
    steps_per_example,
    usage_delta,
)
from persona_agent.optimizers.trace import AlignmentTrace
from persona_agent.programs.persona import (
    INSTRUCTIONS_HEADING,
    NO_PROFILE,
    PROFILE_HEADING,
    Persona,
    init_persona,
    persona_sections,
)
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.steps import STEP_GUARD
from persona_agent.signatures.alignment import PersonaEdit, PersonaGradient, PersonaUpdate
from persona_agent.stores.validation import validate_k


@dataclass(frozen=True)
class CompileEstimate:
    """The most LM calls a compile can make, by phase (simulation, loss, gradient, update, evaluation).

    Early finishes (the agent stops calling tools, matched examples skip their loss, an all-match batch
    skips the update) make fewer; adapter retries on unparseable output can add one per retry. Under a call
    cap, `batch` and `iterations` are the planned ones (`capped` says the cap shrank them)."""

    iterations: int
    simulate: int
    loss: int
    gradient: int
    update: int
    evaluate: int
    batch: int = 0
    capped: bool = False

    @property
    def max_lm_calls(self) -> int:
        return self.simulate + self.loss + self.gradient + self.update + self.evaluate

    def as_dict(self) -> dict[str, int]:
        return {
            "batch": self.batch,
            "capped": self.capped,
            "iterations": self.iterations,
            "simulate": self.simulate,
            "loss": self.loss,
            "gradient": self.gradient,
            "update": self.update,
            "evaluate": self.evaluate,
            "max_lm_calls": self.max_lm_calls,
        }


class PersonaAligner(Teleprompter):
    """Compile a user's persona from that user's latest interactions (the paper's test-time alignment).

    Args:
        metric: `metric(example, prediction, trace=None) -> float` in [0, 1]; default exact match for
            label tasks. A perfect score counts as a match (no loss call); without a metric, the loss
            LM judges matches.
        n: how many of the user's latest interactions form the batch (the paper's n = 3).
        iterations: simulate -> loss -> gradient -> update rounds (the paper: gains plateau after ~3).
        accept: "always" takes every update (the paper); "improve" keeps an update only if it scores
            strictly higher on `valset` (interactions it did not learn from; else the batch) by the metric; a
            tie keeps the current persona (a finer signal, such as the probability planned answers give the
            truth, moved personas on noise in dev runs).
        sim_lm / critic_lm: LMs for simulation and for loss/gradient/update (default: the configured LM).
        max_persona_chars: the persona's length cap.
        update: "rewrite" has the LM write the whole new persona (the paper's step); "edit" asks only
            for statements to add and sentences to remove and applies them in code, for small models
            that copy a persona back unchanged when asked to rewrite it.
        max_lm_calls / max_tokens / max_seconds: the compile's budget.
        num_threads: parallel simulations.
        fit_evidence: for a planned-mode agent over a closed label set, also fit the user's evidence
            weights on the final persona's simulated answers (valset, else batch), at no extra LM call;
            adopted only if leave-one-out over at least `min_fit_records` of them beats the current weights.
    """

    def __init__(
        self,
        *,
        metric: Metric | None = None,
        n: int = 3,
        iterations: int = 1,
        accept: Literal["always", "improve"] = "always",
        sim_lm: dspy.LM | None = None,
        critic_lm: dspy.LM | None = None,
        max_persona_chars: int = 2000,
        update: Literal["rewrite", "edit"] = "rewrite",
        max_lm_calls: int | None = None,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        num_threads: int = 4,
        fit_evidence: bool = True,
        min_fit_records: int = MIN_RECORDS,
    ) -> None:
        super().__init__()
        self.fit_evidence = fit_evidence
        validate_k(min_fit_records, "min_fit_records")
        self.min_fit_records = min_fit_records
        for name, value in (("n", n), ("iterations", iterations), ("max_persona_chars", max_persona_chars)):
            validate_k(value, name)
        if accept not in ("always", "improve"):
            raise InvalidInputError("accept", accept, "must be 'always' or 'improve'")
        if update not in ("rewrite", "edit"):
            raise InvalidInputError("update", update, "must be 'rewrite' or 'edit'")
        self.metric = metric
        self.n = n
        self.iterations = iterations
        self.accept = accept
        self.max_persona_chars = max_persona_chars
        self.guard = PersonaGuard(max_persona_chars)
        self.budget = Budget(max_lm_calls, max_tokens, max_seconds)
        self.simulation = Simulation(sim_lm=sim_lm, critic_lm=critic_lm, num_threads=num_threads)
        self.gradient = dspy.Predict(PersonaGradient)
        self.update_mode = update
        self.update = dspy.Predict(PersonaUpdate if update == "rewrite" else PersonaEdit)

    def plan(
        self, trainset: Sequence[dspy.Example], *, student: PersonaAgent, valset: Sequence[dspy.Example] | None = None
    ) -> CallPlan:
        """The batch size and rounds `compile` runs: as asked, or under `max_lm_calls` the largest batch (then
        the most rounds) whose worst case leaves room for each round's loss, gradient and update. Raises
        `BudgetTooSmallError` (naming `max_lm_calls`, with the minimum) before any call if one example's round
        does not fit."""
        per = steps_per_example(student)
        val = per * len(valset) if self.accept == "improve" and valset else 0
        check = per if self.accept == "improve" and not valset else 0  # the candidate re-simulates the batch
        return fit_calls(
            self.budget.max_lm_calls,
            batch=max(1, min(self.n, len(trainset))),
            iterations=self.iterations,
            per_example=per + 1 + check,  # simulation, loss, and any acceptance re-simulation
            per_round=2 + val,  # gradient and update, and any validation of the candidate
            fixed=val,  # the initial validation score
        )

    def estimate(
        self, trainset: Sequence[dspy.Example], *, student: PersonaAgent, valset: Sequence[dspy.Example] | None = None
    ) -> CompileEstimate:
        """The most LM calls `compile(student, trainset=..., valset=...)` will make, before it runs (the planned
        batch and rounds under a call cap; see `plan`)."""
        planned = self.plan(trainset, student=student, valset=valset)
        batch, t = planned.batch, planned.iterations
        per = steps_per_example(student)
        evaluate = 0
        if self.accept == "improve":
            evaluate = t * per * (len(valset) if valset else batch) + (per * len(valset) if valset else 0)
        return CompileEstimate(t, t * batch * per, t * batch, t, t, evaluate, batch, planned.capped)

    def constrain(self, current: str, proposed: str) -> tuple[str | None, str]:
        """`PersonaGuard.constrain` under this aligner's length cap."""
        return self.guard.constrain(current, proposed)

    # -- one iteration --------------------------------------------------------------------------------

    def _gradient_and_update(self, persona: Persona, records: list[dict]) -> tuple[str, str]:
        losses = "\n\n".join(
            f"{i}. request: {render(r['inputs'])}\n   agent said: {render(r['simulated']) if r['simulated'] else '(failed)'}"
            f"\n   user wanted: {render(r['ground_truth'])}\n   critique: {r['critique']}"
            for i, r in enumerate((r for r in records if not r["matches"]), 1)
        )
        with self.simulation.critic():
            gradient = ask(self.gradient, {"persona": persona.text, "losses": losses}).gradient
            if self.update_mode == "edit":
                edit = ask(self.update, {"persona": persona.text, "gradient": gradient})
                return str(gradient).strip(), apply_edits(persona.text, edit.add or [], edit.remove or [])
            inputs = {"persona": persona.text, "gradient": gradient, "max_chars": self.max_persona_chars}
            proposed = ask(self.update, inputs).new_persona
        return str(gradient).strip(), str(proposed)

    def _iteration(self, it: int, run: _Run) -> bool:
        """One simulate -> loss -> gradient -> update round, recorded in `run.steps`; True if all matched."""
        before = run.meter.report()
        persona = run.persona
        step: dict[str, Any] = {"iteration": it, "persona_version": persona.version, "persona": persona.text}
        run.steps.append(step)
        records = run.current if run.current is not None else self.simulation.simulate(run.agent, run.batch, run.metric)
        run.current = None
        step["examples"] = records
        step["metric"] = mean_score(records)
        self.simulation.critique(persona, records)
        if all(r["matches"] for r in records):
            step["skipped"] = "every simulated response matches"
            step["usage"] = usage_delta(before, run.meter.report())
            return True
        gradient, proposed = self._gradient_and_update(persona, records)
        step["gradient"], step["proposed_persona"] = gradient, proposed
        text, note = self.constrain(persona.text, proposed)
        step["constraint"] = note
        if text is None or text == persona.text:
            step["accepted"] = False
        else:
            self._consider(persona.revise(text), step, run)
        step["usage"] = usage_delta(before, run.meter.report())
        return False

    def _key(self, run: _Run, records: list[dict]) -> tuple[float, float] | None:
        return acceptance_key(records, run.output, run.student.evidence_weights)

    def _consider(self, candidate: Persona, step: dict[str, Any], run: _Run) -> None:
        """Accept the update (accept="always"), or only if it scores strictly higher ("improve")."""
        candidate_agent = run.student.with_persona(candidate)
        if self.accept == "improve":
            held_out = bool(run.valset)
            evaluated = self.simulation.simulate(candidate_agent, run.valset if held_out else run.batch, run.metric)
            new_key = self._key(run, evaluated)
            old_key = run.val_key if held_out else self._key(run, step["examples"])
            step["candidate_metric"] = new_key[0] if new_key is not None else None
            step["accepted"] = new_key is not None and old_key is not None and new_key[0] > old_key[0]
            if step["accepted"]:
                if held_out:
                    run.val_key, run.val_records = new_key, evaluated
                else:
                    run.current = evaluated
        else:
            step["accepted"] = True
        if step["accepted"]:
            run.persona, run.agent = candidate, candidate_agent

    def _final_records(self, run: _Run) -> list[dict] | None:
        """The final persona's simulated answers: on the valset if scored, else on the batch if known."""
        if run.val_records is not None:
            return run.val_records
        if run.current is not None:
            return run.current
        last = run.steps[-1] if run.steps else None
        if last is not None and last.get("persona_version") == run.persona.version and "examples" in last:
            return last["examples"]
        return None

    def _fit(self, run: _Run, compiled: PersonaAgent) -> tuple[PersonaAgent, dict[str, Any] | None]:
        if not self.fit_evidence:
            return compiled, None
        pairs = evidence_records(self._final_records(run) or [], run.output)
        if not pairs:
            return compiled, None
        fit = fit_weights(pairs, compiled.evidence_weights, min_records=self.min_fit_records)
        return compiled.with_evidence_weights(fit.weights), fit.to_dict()

    # -- compile ------------------------------------------------------------------------------------

    def compile(
        self,
        student: PersonaAgent,
        *,
        trainset: Sequence[dspy.Example],
        teacher: dspy.Module | None = None,
        valset: Sequence[dspy.Example] | None = None,
    ) -> PersonaAgent:
        """Return a copy of `student` with an aligned persona and `alignment_trace`; `student` is untouched."""
        if not isinstance(student, PersonaAgent):
            raise InvalidInputError("student", type(student).__name__, "must be a PersonaAgent")
        if not trainset:
            raise InvalidInputError("trainset", trainset, "needs at least one example with ground truth")
        metric = metric_for(self.metric, student)
        if self.accept == "improve" and metric is None:
            raise InvalidInputError("metric", None, "accept='improve' needs a metric for this free-text task")
        estimate = self.estimate(trainset, student=student, valset=valset)  # refuses a cap too small, before a call
        batch = list(trainset)[-estimate.batch :]
        initial = student.persona or init_persona(student.user_id)
        stop_reason = "completed"
        started = time.perf_counter()
        with track_usage() as meter, dspy.context(**{STEP_GUARD: self.budget.guard(meter)}):
            run = _Run(student, batch, valset, metric, meter, initial, student.with_persona(initial))
            try:
                if self.accept == "improve" and valset:
                    run.val_records = self.simulation.simulate(run.agent, valset, metric)
                    run.val_key = self._key(run, run.val_records)
                for it in range(estimate.iterations):
                    if self._iteration(it, run):
                        stop_reason = "all_match"
                        break
            except BudgetExhaustedError as exc:
                stop_reason = f"budget: {exc.reason}"
                if run.steps:
                    run.steps[-1]["stopped"] = stop_reason
        # `run.persona` is the last accepted one: under "always" every update (the paper), under "improve"
        # only updates that did not lower the metric, so it is also the best so far.
        final = run.persona
        compiled, evidence_fit = self._fit(run, student.with_persona(final))
        compiled.alignment_trace = AlignmentTrace(
            strategy="persona_aligner",
            user_id=student.user_id,
            config=self._config(metric),
            estimate=estimate.as_dict(),
            initial_persona=initial.to_dict(),
            iterations=tuple(run.steps),
            stop_reason=stop_reason,
            final_persona=final.to_dict(),
            evidence_fit=evidence_fit,
            usage=meter.report().as_dict(),
            seconds=round(time.perf_counter() - started, 3),
        ).to_dict()
        return compiled

    def _config(self, metric: Metric | None) -> dict[str, Any]:
        return {
            "n": self.n,
            "iterations": self.iterations,
            "accept": self.accept,
            "max_persona_chars": self.max_persona_chars,
            "update": self.update_mode,
            "budget": jsonable(self.budget.__dict__),
            "metric": getattr(metric, "__name__", None),
            "fit_evidence": self.fit_evidence,
            "min_fit_records": self.min_fit_records,
        }


@dataclass
class _Run:
    """One compile's state: its inputs, the persona and agent so far, and the iterations' records."""

    student: PersonaAgent
    batch: list[dspy.Example]
    valset: Sequence[dspy.Example] | None
    metric: Metric | None
    meter: Any
    persona: Persona
    agent: PersonaAgent
    val_key: tuple[float, float] | None = None  # the current persona's valset score (accept="improve")
    val_records: list[dict] | None = None  # its simulated answers on the valset
    current: list[dict] | None = None  # the batch's records under `persona`, when its acceptance simulated them
    steps: list[dict[str, Any]] = field(default_factory=list)

    @property
    def output(self) -> str:
        return next(iter(self.student.task_signature.output_fields))


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def apply_edits(persona_text: str, add: Sequence[str], remove: Sequence[str]) -> str:
    """Apply a `PersonaEdit`: drop profile sentences named in `remove` (matched ignoring case and
    punctuation), append the new `add` statements as bullets (skipping ones already there). The agent
    instructions are kept as they are."""
    sections = persona_sections(persona_text)
    profile_key, instr_key = PROFILE_HEADING[3:], INSTRUCTIONS_HEADING[3:]
    profile = sections.get(profile_key, "")
    drops = [_norm(r) for r in remove if _norm(str(r))]
    kept = []
    for line in profile.splitlines():
        sentences = re.split(r"(?<=[.!?])\s+", line.strip())
        sentences = [x for x in sentences if x and not any(d in _norm(x) or _norm(x) in d for d in drops if _norm(x))]
        if sentences:
            kept.append(" ".join(sentences))
    if NO_PROFILE in kept:
        kept.remove(NO_PROFILE)
    known = _norm(" ".join(kept))
    for statement in add:
        statement = " ".join(str(statement).split()).strip("-• ")
        if statement and _norm(statement) not in known:
            kept.append(f"- {statement}")
            known += " " + _norm(statement)
    return f"{PROFILE_HEADING}\n{chr(10).join(kept)}\n\n{INSTRUCTIONS_HEADING}\n{sections.get(instr_key, '')}"
