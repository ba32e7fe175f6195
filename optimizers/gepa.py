"""`GEPAPersonaOptimizer`: GEPA (reflective evolution with textual feedback) over the persona text, a peer of
`PersonaAligner` in the same interface and under the same budget; its result is a persona like the aligner's.

It runs through the `gepa` engine (the one `dspy.GEPA` wraps) with an adapter whose single component is the
persona (`gepa_adapter`). `dspy.GEPA` itself would evolve each predictor's instruction separately, while our
persona heads all of them. Feedback for reflection is our textual loss. Every LM call (simulation, loss,
reflection) passes the compile's budget guard.

By default (`constrain=True`) each proposal is held to the `PersonaGuard` (PersonaAligner's constraints, and
no echo of GEPA's reflection prompt) before it is scored, so what wins the search is a persona the agent can
run under. `constrain=False` searches as published; the evaluation's GEPA rows do.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import dspy
from dspy.teleprompt import Teleprompter

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.usage import track_usage
from persona_agent.optimizers.budget import Budget, BudgetExhaustedError
from persona_agent.optimizers.gepa_adapter import GEPARunLog, PersonaGEPAAdapter, gepa_echo
from persona_agent.optimizers.guard import PersonaGuard, Proposals
from persona_agent.optimizers.simulation import Metric, Simulation, metric_for, steps_per_example
from persona_agent.optimizers.trace import AlignmentTrace
from persona_agent.programs.persona import init_persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.steps import STEP_GUARD
from persona_agent.stores.validation import validate_k

MAX_LM_CALLS = 60  # GEPA's budget when none is given: it has no natural end of its own


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
        max_lm_calls: int = MAX_LM_CALLS,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        reflection_lm: dspy.LM | None = None,
        log_dir: str | Path | None = None,
        num_threads: int = 4,
        seed: int = 0,
        constrain: bool = True,
    ) -> None:
        super().__init__()
        self.metric = metric
        self.n = validate_k(n, "n")
        self.simulation = Simulation(num_threads=num_threads)
        self.budget = Budget(max_lm_calls, max_tokens, max_seconds)
        self.reflection_lm = reflection_lm
        self.log_dir = log_dir
        self.seed = seed
        self.constrain = constrain

    def compile(self, student: PersonaAgent, *, trainset, teacher=None, valset=None) -> PersonaAgent:
        metric = metric_for(self.metric, student)
        if metric is None:
            raise InvalidInputError("metric", None, "GEPA needs a metric for this free-text task")
        batch = list(trainset)[-self.n :]
        if not batch:
            raise InvalidInputError("trainset", trainset, "needs at least one example with ground truth")
        persona = student.persona or init_persona(student.user_id)
        started = time.perf_counter()
        guard = PersonaGuard(echo=gepa_echo())
        proposals = guard.proposals(persona.text, self.constrain)
        run_dir = self.log_dir or tempfile.mkdtemp(prefix=f"gepa-{student.user_id}-")
        with track_usage() as meter:
            adapter, result = self._optimize(student, metric, batch, valset, proposals, meter, run_dir)
        best_text = result.best_candidate["persona"] if result is not None else persona.text
        final = persona if best_text == persona.text else persona.revise(best_text)
        compiled = student.with_persona(final)
        compiled.alignment_trace = AlignmentTrace(
            strategy="gepa",
            user_id=student.user_id,
            initial_persona=persona.to_dict(),
            final_persona=final.to_dict(),
            constrained=self.constrain,
            persona_check=guard.check(persona, final, "GEPA"),
            proposals=proposals.trace(),
            evaluations=adapter.evaluations,
            val_scores=list(result.val_aggregate_scores) if result is not None else [],
            candidates=[c["persona"] for c in result.candidates] if result is not None else [],
            run_dir=str(run_dir),
            stop_reason=adapter.exhausted or "completed",
            usage=meter.report().as_dict(),
            seconds=round(time.perf_counter() - started, 3),
        ).to_dict()
        return compiled

    def _optimize(
        self, student: PersonaAgent, metric: Metric, batch: list, valset, proposals: Proposals, meter, run_dir
    ) -> tuple[PersonaGEPAAdapter, Any]:
        """Run the gepa engine under the budget: the adapter (its record) and gepa's result (None if spent)."""
        import gepa

        guard = self.budget.guard(meter)
        lm = self.reflection_lm or dspy.settings.lm

        def reflect(prompt: str) -> str:
            guard()  # the proposer's calls count against the same budget
            out = lm(prompt)
            return out[0] if isinstance(out, list) else str(out)

        adapter = PersonaGEPAAdapter(self.simulation, student, metric, reflect, proposals)
        per_eval = steps_per_example(student)
        with dspy.context(**{STEP_GUARD: guard}):
            try:
                result = gepa.optimize(
                    seed_candidate={"persona": proposals.initial},
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
        return adapter, result
