"""Peers of `PersonaAligner` in the same interface and under the same budget: GEPA (reflective
evolution with textual feedback) and COPRO (instruction search scored by the metric only).

Both optimise one component, the persona text, so their results are personas like the aligner's:
- GEPA runs through the `gepa` engine (the one `dspy.GEPA` wraps) with an adapter whose single
  component is the persona. `dspy.GEPA` itself would evolve each predictor's instruction separately,
  while our persona heads all of them. Feedback for reflection is our textual loss.
- COPRO is `dspy.COPRO` over a view of the agent whose single predictor carries the persona.

Every LM call (simulation, loss, GEPA's reflection) passes the compile's budget guard; COPRO's own
proposal calls are outside it, so its guard keeps back one call per depth round for them.

By default (`constrain=True`) each proposal is held to `PersonaAligner.constrain` (the two sections, the
template variables, the length cap) before it is scored, and one that echoes the optimizer's own prompt
(`prompt_echo`) is rejected, so what wins the search is a persona the agent can run under. A small LM
otherwise hands back its own prompt, or a bare instruction that drops the agent's tool instructions.
`constrain=False` searches as published; the evaluation's GEPA and COPRO rows do.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
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
from persona_agent.programs.prompt_echo import PromptEcho, copro_prompt, gepa_reflection_prompt
from persona_agent.programs.steps import STEP_GUARD
from persona_agent.usage import track_usage

STRATEGIES = ("persona_aligner", "gepa", "copro")

logger = logging.getLogger(__name__)

# What GEPA's reflection prompt shows of each example: gepa renders each key as a "## <key>" heading. The
# headings and the feedback's fixed start are echo labels (`gepa_reflection_prompt`).
REFLECTION_KEYS = ("Inputs", "Generated Outputs", "Feedback")
FEEDBACK_START = "The user actually wanted "


def _reflection_record(r: dict[str, Any]) -> dict[str, Any]:
    """One evaluated example as the reflection LM sees it: inputs, the agent's answer, the feedback."""
    output = r.get("simulated") or f"(failed: {r.get('error')})"
    feedback = f"{FEEDBACK_START}{r['ground_truth']}. {r.get('critique', '')}".strip()
    return dict(zip(REFLECTION_KEYS, (r["inputs"], output, feedback), strict=True))


class GEPARunLog:
    """GEPA's progress messages, appended to `run_log.txt` in its run folder and sent to this module's logger.

    Given only a run folder, gepa logs through a `Logger` that swaps the process-wide sys.stdout/stderr for
    a tee into that file: every other thread's prints land in it, then fail once it is closed. Handing gepa
    this logger keeps the same file without touching the streams, so GEPA compiles can run in parallel."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / "run_log.txt"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, message: str) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(f"{message}\n")
        logger.debug("gepa: %s", message)


def gepa_echo() -> PromptEcho:
    """GEPA's reflection prompt as this adapter fills it (the ground truth in the feedback is a dict)."""
    return gepa_reflection_prompt(REFLECTION_KEYS, FEEDBACK_START + "{")


def _hold(base: PersonaAligner, echo: PromptEcho | None, initial: str, proposed: str) -> tuple[str | None, str]:
    """`PersonaAligner.constrain`, after rejecting a text that echoes the optimizer's own prompt."""
    echoed = echo.note(proposed, allowed=initial) if echo is not None else None
    return (None, echoed) if echoed else base.constrain(initial, proposed)


def persona_check(
    base: PersonaAligner, initial: Persona, final: Persona, strategy: str, echo: PromptEcho | None = None
) -> str:
    """What `PersonaAligner.constrain` (and `echo`, the strategy's own prompt) says of the persona a strategy
    returned: "ok", or what breaks.

    Under `constrain=False` a strategy returns what its search found; the check goes in the trace and a
    warning, so nobody serves such a persona unawares. Under `constrain=True` it is "ok" by construction."""
    if final.text == initial.text:
        return "ok"
    text, note = _hold(base, echo, initial.text, final.text)
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


class _Constraint:
    """Applies `PersonaAligner.constrain` to proposals against the persona the search started from, after
    rejecting one that echoes the search's own prompt, and keeps a note for each distinct proposal (for the
    trace). A rejected proposal becomes the start persona, so it can never win."""

    def __init__(self, base: PersonaAligner, initial: str, enabled: bool, echo: PromptEcho) -> None:
        self.base, self.initial, self.enabled, self.echo = base, initial, enabled, echo
        self.notes: dict[str, str] = {}

    def __deepcopy__(self, memo: dict) -> _Constraint:
        return self  # COPRO deep-copies the program it searches; every copy must report to the same notes

    def __call__(self, proposed: str) -> str:
        if not self.enabled or proposed == self.initial:
            return proposed
        text, note = _hold(self.base, self.echo, self.initial, proposed)
        if proposed not in self.notes:
            self.notes[proposed] = note if text is not None else f"rejected: {note}"
        return self.initial if text is None else text

    def trace(self) -> list[dict[str, Any]]:
        return [{"proposed_chars": len(p), "note": n} for p, n in self.notes.items()]


class _PersonaGEPAAdapter:
    """GEPA adapter: candidate {"persona": text} -> the agent under that persona on a batch.

    Error policy (GEPA's): an example that fails gets score 0 and its error as feedback; a spent
    budget marks the guard and scores the rest 0, and the stopper ends the run at the next check."""

    def __init__(
        self,
        base: PersonaAligner,
        student: PersonaAgent,
        metric: Metric,
        guard: BudgetGuard,
        reflect: Callable[[str], str],
        constraint: _Constraint,
    ) -> None:
        from gepa.proposer.reflective_mutation.reflection_lm import StatelessReflectionLM

        self.base = base
        self.student = student
        self.metric = metric
        self.guard = guard
        self.exhausted: str | None = None
        self.evaluations: list[dict[str, Any]] = []
        self.constraint = constraint
        self._reflection = StatelessReflectionLM(reflect)  # GEPA's default proposer, prompt and parsing

    def propose_new_texts(self, candidate, reflective_dataset, components_to_update) -> dict[str, str]:
        """GEPA's own reflective proposal, then the persona constraints (when enabled) on each new text."""
        proposal, self._reflection = self._reflection.reflect(candidate, reflective_dataset, components_to_update)
        return {name: self.constraint(text) for name, text in proposal.new_texts.items()}

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
        items = [_reflection_record(r) for r in records]
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
        constrain: bool = True,
    ) -> None:
        super().__init__()
        self.base = PersonaAligner(metric=metric, n=n, num_threads=num_threads)
        self.budget = Budget(max_lm_calls, max_tokens, max_seconds)
        self.reflection_lm = reflection_lm
        self.log_dir = log_dir
        self.seed = seed
        self.constrain = constrain

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
        echo = gepa_echo()
        constraint = _Constraint(self.base, persona.text, self.constrain, echo)
        with track_usage() as meter:
            guard = self.budget.guard(meter)
            lm = self.reflection_lm or dspy.settings.lm

            def reflect(prompt: str) -> str:
                guard()  # the proposer's calls count against the same budget
                out = lm(prompt)
                return out[0] if isinstance(out, list) else str(out)

            adapter = _PersonaGEPAAdapter(self.base, student, metric, guard, reflect, constraint)

            per_eval = self.base._steps_per_example(student)
            with dspy.context(**{STEP_GUARD: guard}):
                run_dir = self.log_dir or tempfile.mkdtemp(prefix=f"gepa-{student.user_id}-")
                try:
                    result = gepa.optimize(
                        seed_candidate={"persona": persona.text},
                        trainset=batch,
                        valset=list(valset) if valset else batch,
                        adapter=adapter,
                        max_metric_calls=max(len(batch), self.budget.max_lm_calls // per_eval),
                        stop_callbacks=[lambda state: adapter.exhausted is not None],
                        reflection_minibatch_size=len(batch),
                        run_dir=str(run_dir),
                        logger=GEPARunLog(run_dir),
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
                "constrained": self.constrain,
                "persona_check": persona_check(self.base, persona, final, "GEPA", echo),
                "proposals": constraint.trace(),
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

    COPRO rewrites that instruction and scores the program; `forward` runs the real agent under the
    instruction as `constraint` holds it."""

    def __init__(self, agent: PersonaAgent, persona: Persona, constraint: _Constraint) -> None:
        super().__init__()
        self.persona = dspy.Predict(agent.task_signature.with_instructions(persona.text))
        # hides the agent's predictors (and the shared constraint) from the optimizer's deepcopy and walk
        self._holder = SimpleNamespace(agent=agent, constraint=constraint)

    def forward(self, as_of=None, **inputs: Any) -> dspy.Prediction:
        agent, constraint = self._holder.agent, self._holder.constraint
        text = constraint(self.persona.signature.instructions)
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
        constrain: bool = True,
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
        self.constrain = constrain

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
        echo = copro_prompt()
        constraint = _Constraint(self.base, persona.text, self.constrain, echo)
        started = time.perf_counter()
        reason = "completed"
        # Evaluate counts a spent budget as an example error: let it score 0 rather than abort COPRO.
        with track_usage() as meter:
            guard = self.budget.guard(meter)
            with dspy.context(max_errors=10**9, **{STEP_GUARD: guard}):
                copro = dspy.COPRO(metric=metric, breadth=self.breadth, depth=self.depth, track_stats=True)
                try:
                    view = copro.compile(
                        PersonaView(student, persona, constraint),
                        trainset=batch,
                        eval_kwargs={"num_threads": self.num_threads, "display_progress": False},
                    )
                    best_text = constraint(view.persona.signature.instructions)  # the text that was scored
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
                "constrained": self.constrain,
                "persona_check": persona_check(self.base, persona, final, "COPRO", echo),
                "proposals": constraint.trace(),
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
