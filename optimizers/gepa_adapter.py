"""The adapter `GEPAPersonaOptimizer` hands the `gepa` engine: its single component is the persona text, its
evaluation is our simulation, its feedback our textual loss. Also GEPA's run log, and GEPA's reflection prompt
as the guard's echo test knows it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy

from persona_agent.optimizers.budget import BudgetExhaustedError
from persona_agent.optimizers.guard import Proposals
from persona_agent.optimizers.simulation import Metric, Simulation, jsonable
from persona_agent.programs.persona import Persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.prompt_echo import PromptEcho, gepa_reflection_prompt

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


def gepa_echo() -> PromptEcho:
    """GEPA's reflection prompt as this adapter fills it (the ground truth in the feedback is a dict)."""
    return gepa_reflection_prompt(REFLECTION_KEYS, FEEDBACK_START + "{")


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


class PersonaGEPAAdapter:
    """GEPA adapter: candidate {"persona": text} -> the agent under that persona on a batch.

    Error policy (GEPA's): an example that fails gets score 0 and its error as feedback; a spent
    budget marks the adapter `exhausted` and scores the rest 0, and the stopper ends the run at the next check."""

    def __init__(
        self,
        simulation: Simulation,
        student: PersonaAgent,
        metric: Metric,
        reflect: Callable[[str], str],
        proposals: Proposals,
    ) -> None:
        from gepa.proposer.reflective_mutation.reflection_lm import StatelessReflectionLM

        self.simulation = simulation
        self.student = student
        self.metric = metric
        self.exhausted: str | None = None
        self.evaluations: list[dict[str, Any]] = []
        self.proposals = proposals
        self._reflection = StatelessReflectionLM(reflect)  # GEPA's default proposer, prompt and parsing

    def propose_new_texts(self, candidate, reflective_dataset, components_to_update) -> dict[str, str]:
        """GEPA's own reflective proposal, then the persona guard (when enabled) on each new text."""
        proposal, self._reflection = self._reflection.reflect(candidate, reflective_dataset, components_to_update)
        return {name: self.proposals(text) for name, text in proposal.new_texts.items()}

    def _persona(self, candidate: dict[str, str]) -> Persona:
        return Persona(user_id=self.student.user_id, text=candidate["persona"], source="aligned")

    def evaluate(self, batch: list[dspy.Example], candidate: dict[str, str], capture_traces: bool = False):
        from gepa import EvaluationBatch

        if self.exhausted:
            records = [{"score": 0.0, "simulated": None, "error": self.exhausted} for _ in batch]
        else:
            try:
                agent = self.student.with_persona(self._persona(candidate))
                records = self.simulation.simulate(agent, batch, self.metric)
            except BudgetExhaustedError as exc:
                self.exhausted = f"budget: {exc.reason}"
                records = [{"score": 0.0, "simulated": None, "error": self.exhausted} for _ in batch]
        for r, ex in zip(records, batch, strict=True):
            r.setdefault("ground_truth", {k: jsonable(ex[k]) for k in self.student.task_signature.output_fields})
            r.setdefault("inputs", jsonable(dict(ex.inputs())))
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
                self.simulation.critique(self._persona(candidate), [r for r in records if "matches" not in r])
            except BudgetExhaustedError as exc:
                self.exhausted = f"budget: {exc.reason}"
        items = [_reflection_record(r) for r in records]
        return dict.fromkeys(components_to_update, items)
