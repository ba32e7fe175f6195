"""`COPROPersonaOptimizer`: DSPy's COPRO (instruction search scored by the metric only) over the persona text,
a peer of `PersonaAligner` in the same interface and under the same budget; its result is a persona.

COPRO is `dspy.COPRO` over a view of the agent whose single predictor carries the persona (`PersonaView`).
Every simulation passes the compile's budget guard; COPRO's own proposal calls are outside it, so its guard
keeps back one call per depth round for them.

By default (`constrain=True`) each proposal is held to the `PersonaGuard` (PersonaAligner's constraints, and
no echo of COPRO's proposal prompt) before it is scored. `constrain=False` searches as published; the
evaluation's COPRO rows do.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import dspy
from dspy.teleprompt import Teleprompter

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.usage import track_usage
from persona_agent.optimizers.budget import Budget, BudgetExhaustedError
from persona_agent.optimizers.guard import PersonaGuard, Proposals
from persona_agent.optimizers.simulation import Metric, metric_for
from persona_agent.optimizers.trace import AlignmentTrace
from persona_agent.optimizers.trainset import AS_OF
from persona_agent.programs.persona import Persona, init_persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.prompt_echo import copro_prompt
from persona_agent.programs.steps import STEP_GUARD
from persona_agent.stores.validation import validate_k

DEPTH = 2  # COPRO's rounds by default (dspy.COPRO's own default)


class PersonaView(dspy.Module):
    """The agent as COPRO sees it: one predictor, `persona`, whose instruction is the persona text.

    COPRO rewrites that instruction and scores the program; `forward` runs the real agent under the
    instruction as `proposals` holds it."""

    def __init__(self, agent: PersonaAgent, persona: Persona, proposals: Proposals) -> None:
        super().__init__()
        self.persona = dspy.Predict(agent.task_signature.with_instructions(persona.text))
        # hides the agent's predictors (and the shared proposals filter) from the optimizer's deepcopy and walk
        self._holder = SimpleNamespace(agent=agent, proposals=proposals)

    def forward(self, as_of=None, **inputs: Any) -> dspy.Prediction:
        agent, proposals = self._holder.agent, self._holder.proposals
        text = proposals(self.persona.signature.instructions)
        return agent.with_persona(Persona(user_id=agent.user_id, text=text, source="aligned"))(as_of=as_of, **inputs)


class COPROPersonaOptimizer(Teleprompter):
    """DSPy's COPRO over the persona text (scores only, no textual feedback), under a `Budget`."""

    def __init__(
        self,
        *,
        metric: Metric | None = None,
        n: int = 3,
        breadth: int = 3,
        depth: int = DEPTH,
        max_lm_calls: int | None = None,
        max_tokens: int | None = None,
        max_seconds: float | None = None,
        num_threads: int = 1,
        constrain: bool = True,
    ) -> None:
        super().__init__()
        if breadth < 2:
            raise InvalidInputError("breadth", breadth, "COPRO needs a breadth of at least 2")
        self.metric = metric
        self.n = validate_k(n, "n")
        self.breadth, self.depth = breadth, depth
        reserve = depth if max_lm_calls is not None else 0
        if max_lm_calls is not None and max_lm_calls <= reserve:
            raise InvalidInputError("max_lm_calls", max_lm_calls, f"COPRO needs more than {reserve} calls")
        self.budget = Budget(None if max_lm_calls is None else max_lm_calls - reserve, max_tokens, max_seconds)
        self.num_threads = num_threads
        self.constrain = constrain

    def compile(self, student: PersonaAgent, *, trainset, teacher=None, valset=None) -> PersonaAgent:
        metric = metric_for(self.metric, student)
        if metric is None:
            raise InvalidInputError("metric", None, "COPRO needs a metric for this free-text task")
        # DSPy's Evaluate calls the program with `example.inputs()` only: make the cut-off an input, or
        # the simulation would search all of memory, the example itself included.
        batch = [ex.with_inputs(*ex.inputs().keys(), AS_OF) if AS_OF in ex else ex for ex in list(trainset)[-self.n :]]
        persona = student.persona or init_persona(student.user_id)
        guard = PersonaGuard(echo=copro_prompt())
        proposals = guard.proposals(persona.text, self.constrain)
        started = time.perf_counter()
        reason = "completed"
        # Evaluate counts a spent budget as an example error: let it score 0 rather than abort COPRO.
        with track_usage() as meter:
            budget_guard = self.budget.guard(meter)
            with dspy.context(max_errors=10**9, **{STEP_GUARD: budget_guard}):
                copro = dspy.COPRO(metric=metric, breadth=self.breadth, depth=self.depth, track_stats=True)
                try:
                    view = copro.compile(
                        PersonaView(student, persona, proposals),
                        trainset=batch,
                        eval_kwargs={"num_threads": self.num_threads, "display_progress": False},
                    )
                    best_text = proposals(view.persona.signature.instructions)  # the text that was scored
                except BudgetExhaustedError:
                    best_text = persona.text
            if budget_guard.exhausted:
                reason = f"budget: {budget_guard.exhausted}"
        final = persona if best_text == persona.text else persona.revise(best_text)
        compiled = student.with_persona(final)
        compiled.alignment_trace = AlignmentTrace(
            strategy="copro",
            user_id=student.user_id,
            initial_persona=persona.to_dict(),
            final_persona=final.to_dict(),
            constrained=self.constrain,
            persona_check=guard.check(persona, final, "COPRO"),
            proposals=proposals.trace(),
            stop_reason=reason,
            usage=meter.report().as_dict(),
            seconds=round(time.perf_counter() - started, 3),
        ).to_dict()
        return compiled
