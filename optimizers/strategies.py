"""Peers of `PersonaAligner` in the same interface and under the same budget: GEPA (reflective
evolution with textual feedback) and COPRO (instruction search scored by the metric only).

Both optimise one component, the persona text, so their results are personas like the aligner's:
- GEPA runs through the `gepa` engine (the one `dspy.GEPA` wraps) with an adapter whose single
  component is the persona. `dspy.GEPA` itself would evolve each predictor's instruction separately,
  while our persona heads all of them. Feedback for reflection is our textual loss.
- COPRO is `dspy.COPRO` over a view of the agent whose single predictor carries the persona.

Every LM call (simulation, loss, GEPA's reflection) passes the compile's budget guard; COPRO's own
proposal calls are outside it, so its guard keeps back one call per depth round for them.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dspy
from dspy.teleprompt import Teleprompter

from persona_agent.errors import InvalidInputError
from persona_agent.optimizers.budget import Budget, BudgetExhaustedError, BudgetGuard
from persona_agent.optimizers.persona_aligner import Metric, PersonaAligner, _jsonable
from persona_agent.optimizers.trainset import AS_OF
from persona_agent.programs.persona import Persona, init_persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.steps import STEP_GUARD
from persona_agent.usage import track_usage

STRATEGIES = ("persona_aligner", "gepa", "copro")

logger = logging.getLogger(__name__)


def persona_check(base: PersonaAligner, initial: Persona, final: Persona, strategy: str) -> str:
    """What `PersonaAligner.constrain` says of the persona a strategy returned: "ok", or what breaks.

    GEPA and COPRO search unconstrained, as published, so a small LM can hand back its own prompt or a
    persona without the agent's instructions. The search is left as is; the check goes in the trace
    and a warning, so nobody serves such a persona unawares."""
    if final.text == initial.text:
        return "ok"
    text, note = base.constrain(initial.text, final.text)
    if text is not None and note == "ok":
        return "ok"
    note = f"{'would be rejected' if text is None else 'would be repaired'}: {note}"
    logger.warning(
        "%s persona for user %s (%d chars) fails PersonaAligner's checks: it %s",
        strategy,
        final.user_id,
        len(final.text),
        note,
    )
    return note


class _PersonaGEPAAdapter:
    """GEPA adapter: candidate {"persona": text} -> the agent under that persona on a batch.

    Error policy (GEPA's): an example that fails gets score 0 and its error as feedback; a spent
    budget marks the guard and scores the rest 0, and the stopper ends the run at the next check."""

    def __init__(self, base: PersonaAligner, student: PersonaAgent, metric: Metric, guard: BudgetGuard) -> None:
        self.base = base
        self.student = student
        self.metric = metric
        self.guard = guard
        self.exhausted: str | None = None
        self.evaluations: list[dict[str, Any]] = []
        self.propose_new_texts = None  # GEPA's default reflective proposer

    def _persona(self, candidate: dict[str, str]) -> Persona:
        return Persona(user_id=self.student.user_id, text=candidate["persona"], source="aligned")

    def evaluate(self, batch: list[dspy.Example], candidate: dict[str, str], capture_traces: bool = False):
        from gepa import EvaluationBatch

        if self.exhausted:
            records = [{"score": 0.0, "simulated": None, "error": self.exhausted} for _ in batch]
        else:
            try:
                records = self.base.simulate(self.student.with_persona(self._persona(candidate)), batch, self.metric)
            except BudgetExhaustedError as exc:
                self.exhausted = f"budget: {exc.reason}"
                records = [{"score": 0.0, "simulated": None, "error": self.exhausted} for _ in batch]
        for r, ex in zip(records, batch, strict=True):
            r.setdefault("ground_truth", {k: _jsonable(ex[k]) for k in self.student.task_signature.output_fields})
            r.setdefault("inputs", _jsonable(dict(ex.inputs())))
        self.evaluations.append({"persona": candidate["persona"], "scores": [r["score"] or 0.0 for r in records]})
        return EvaluationBatch(
            outputs=[r.get("simulated") for r in records],
            scores=[float(r["score"] or 0.0) for r in records],
            trajectories=records if capture_traces else None,
        )

    def make_reflective_dataset(self, candidate, eval_batch, components_to_update):
        records = eval_batch.trajectories or []
        if not self.exhausted:
            try:
                self.base.critique(self._persona(candidate), [r for r in records if "matches" not in r])
            except BudgetExhaustedError as exc:
                self.exhausted = f"budget: {exc.reason}"
        items = [
            {
                "Inputs": r["inputs"],
                "Generated Outputs": r.get("simulated") or f"(failed: {r.get('error')})",
                "Feedback": f"The user actually wanted {r['ground_truth']}. {r.get('critique', '')}".strip(),
            }
            for r in records
        ]
        return dict.fromkeys(components_to_update, items)


class GEPAPersonaOptimizer(Teleprompter):
    """GEPA over the persona text, with textual-loss feedback, under a `Budget` shared with its proposer.

    `log_dir` is GEPA's run folder (it resumes from one): by default a fresh temporary folder per
    compile, so two users or two runs never resume each other's state.
    """

    def __init__(
        self,
        *,
        metric: Metric | None = None,
        n: int = 3,
        max_lm_calls: int = 60,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        reflection_lm: dspy.LM | None = None,
        log_dir: str | Path | None = None,
        num_threads: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.base = PersonaAligner(metric=metric, n=n, num_threads=num_threads)
        self.budget = Budget(max_lm_calls, max_tokens, max_seconds)
        self.reflection_lm = reflection_lm
        self.log_dir = log_dir
        self.seed = seed

    def compile(self, student: PersonaAgent, *, trainset, teacher=None, valset=None) -> PersonaAgent:
        import gepa

        metric = self.base._metric_for(student)
        if metric is None:
            raise InvalidInputError("metric", None, "GEPA needs a metric for this free-text task")
        batch = list(trainset)[-self.base.n :]
        if not batch:
            raise InvalidInputError("trainset", trainset, "needs at least one example with ground truth")
        persona = student.persona or init_persona(student.user_id)
        started = time.perf_counter()
        with track_usage() as meter:
            guard = self.budget.guard(meter)
            adapter = _PersonaGEPAAdapter(self.base, student, metric, guard)
            lm = self.reflection_lm or dspy.settings.lm

            def reflect(prompt: str) -> str:
                guard()  # the proposer's calls count against the same budget
                out = lm(prompt)
                return out[0] if isinstance(out, list) else str(out)

            per_eval = self.base._steps_per_example(student)
            with dspy.context(**{STEP_GUARD: guard}):
                run_dir = self.log_dir or tempfile.mkdtemp(prefix=f"gepa-{student.user_id}-")
                try:
                    result = gepa.optimize(
                        seed_candidate={"persona": persona.text},
                        trainset=batch,
                        valset=list(valset) if valset else batch,
                        adapter=adapter,
                        reflection_lm=reflect,
                        max_metric_calls=max(len(batch), self.budget.max_lm_calls // per_eval),
                        stop_callbacks=[lambda state: adapter.exhausted is not None],
                        reflection_minibatch_size=len(batch),
                        run_dir=str(run_dir),
                        seed=self.seed,
                        display_progress_bar=False,
                        raise_on_exception=True,
                    )
                except BudgetExhaustedError as exc:  # raised by the proposer's guard
                    adapter.exhausted = f"budget: {exc.reason}"
                    result = None
        best_text = result.best_candidate["persona"] if result is not None else persona.text
        final = persona if best_text == persona.text else persona.revise(best_text)
        compiled = student.with_persona(final)
        compiled.alignment_trace = _jsonable(
            {
                "strategy": "gepa",
                "user_id": student.user_id,
                "initial_persona": persona.to_dict(),
                "final_persona": final.to_dict(),
                "persona_check": persona_check(self.base, persona, final, "GEPA"),
                "evaluations": adapter.evaluations,
                "val_scores": list(result.val_aggregate_scores) if result is not None else [],
                "candidates": [c["persona"] for c in result.candidates] if result is not None else [],
                "run_dir": str(run_dir),
                "stop_reason": adapter.exhausted or "completed",
                "usage": meter.report().as_dict(),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        return compiled


class PersonaView(dspy.Module):
    """The agent as COPRO sees it: one predictor, `persona`, whose instruction is the persona text.

    COPRO rewrites that instruction and scores the program; `forward` runs the real agent under it."""

    def __init__(self, agent: PersonaAgent, persona: Persona) -> None:
        super().__init__()
        self.persona = dspy.Predict(agent.task_signature.with_instructions(persona.text))
        self._holder = SimpleNamespace(agent=agent)  # hides the agent's predictors from the optimizer

    def forward(self, as_of=None, **inputs: Any) -> dspy.Prediction:
        agent = self._holder.agent
        text = self.persona.signature.instructions
        return agent.with_persona(Persona(user_id=agent.user_id, text=text, source="aligned"))(as_of=as_of, **inputs)


class COPROPersonaOptimizer(Teleprompter):
    """DSPy's COPRO over the persona text (scores only, no textual feedback), under a `Budget`."""

    def __init__(
        self,
        *,
        metric: Metric | None = None,
        n: int = 3,
        breadth: int = 3,
        depth: int = 2,
        max_lm_calls: int | None = None,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        num_threads: int = 1,
    ) -> None:
        super().__init__()
        if breadth < 2:
            raise InvalidInputError("breadth", breadth, "COPRO needs a breadth of at least 2")
        self.base = PersonaAligner(metric=metric, n=n, num_threads=num_threads)
        self.breadth, self.depth = breadth, depth
        reserve = depth if max_lm_calls is not None else 0
        if max_lm_calls is not None and max_lm_calls <= reserve:
            raise InvalidInputError("max_lm_calls", max_lm_calls, f"COPRO needs more than {reserve} calls")
        self.budget = Budget(None if max_lm_calls is None else max_lm_calls - reserve, max_tokens, max_seconds)
        self.num_threads = num_threads

    def compile(self, student: PersonaAgent, *, trainset, teacher=None, valset=None) -> PersonaAgent:
        metric = self.base._metric_for(student)
        if metric is None:
            raise InvalidInputError("metric", None, "COPRO needs a metric for this free-text task")
        # DSPy's Evaluate calls the program with `example.inputs()` only: make the cut-off an input, or
        # the simulation would search all of memory, the example itself included.
        batch = [
            ex.with_inputs(*ex.inputs().keys(), AS_OF) if AS_OF in ex else ex for ex in list(trainset)[-self.base.n :]
        ]
        persona = student.persona or init_persona(student.user_id)
        started = time.perf_counter()
        reason = "completed"
        # Evaluate counts a spent budget as an example error: let it score 0 rather than abort COPRO.
        with track_usage() as meter:
            guard = self.budget.guard(meter)
            with dspy.context(max_errors=10**9, **{STEP_GUARD: guard}):
                copro = dspy.COPRO(metric=metric, breadth=self.breadth, depth=self.depth, track_stats=True)
                try:
                    view = copro.compile(
                        PersonaView(student, persona),
                        trainset=batch,
                        eval_kwargs={"num_threads": self.num_threads, "display_progress": False},
                    )
                    best_text = view.persona.signature.instructions
                except BudgetExhaustedError:
                    best_text = persona.text
            if guard.exhausted:
                reason = f"budget: {guard.exhausted}"
        final = persona if best_text == persona.text else persona.revise(best_text)
        compiled = student.with_persona(final)
        compiled.alignment_trace = _jsonable(
            {
                "strategy": "copro",
                "user_id": student.user_id,
                "initial_persona": persona.to_dict(),
                "final_persona": final.to_dict(),
                "persona_check": persona_check(self.base, persona, final, "COPRO"),
                "stop_reason": reason,
                "usage": meter.report().as_dict(),
                "seconds": round(time.perf_counter() - started, 3),
            }
        )
        return compiled


def make_optimizer(strategy: str, **options: Any) -> Teleprompter:
    """A compile strategy by name: "persona_aligner" (the paper's), "gepa" or "copro"."""
    classes = {"persona_aligner": PersonaAligner, "gepa": GEPAPersonaOptimizer, "copro": COPROPersonaOptimizer}
    if strategy not in classes:
        raise InvalidInputError("strategy", strategy, f"choose from {list(STRATEGIES)}")
    return classes[strategy](**options)
