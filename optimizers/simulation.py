"""The phases every compile strategy shares: run the agent on the user's examples (`Simulation.simulate`) and
state a textual loss for each miss (`Simulation.critique`), plus the small helpers around them.

PersonaAligner turns the losses into a gradient and an update; GEPA's adapter hands them to its reflection
as feedback. Error policy (as GEPA's adapters): one example whose simulation fails gets a failure score and
a critique saying so; systemic errors (no LM, a spent budget) propagate to the strategy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from contextvars import copy_context
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from persona_agent.optimizers.metrics import exact_match
from persona_agent.optimizers.trainset import AS_OF
from persona_agent.programs.persona import Persona
from persona_agent.programs.persona_agent import PersonaAgent, resolve_mode
from persona_agent.programs.steps import Predict, Steps, run_sync
from persona_agent.signatures.alignment import TextualLoss
from persona_agent.signatures.tasks import labels_of

Metric = Callable[..., float]


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data: dict keys as strings, tuples as lists, dates in ISO form, others as str."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def thread_map(fn: Callable[[Any], Any], items: Sequence[Any], num_threads: int) -> list[Any]:
    """`fn` over `items` in threads that carry the caller's DSPy context (LM, adapter, callbacks, guard);
    results in order; the first exception is re-raised after the others finish."""
    if num_threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(num_threads, len(items))) as pool:
        futures = [pool.submit(copy_context().run, fn, item) for item in items]
        return [f.result() for f in futures]


def metric_for(metric: Metric | None, student: PersonaAgent) -> Metric | None:
    """`metric`, else exact match for a label task, else None (a free-text task without a metric)."""
    if metric is not None:
        return metric
    return exact_match if labels_of(student.task_signature) is not None else None


def steps_per_example(student: PersonaAgent) -> int:
    """The most LM calls one simulated example makes: the tool loop and its final answer, or one call
    (planned mode, or no tools)."""
    if resolve_mode(student.mode, dspy.settings.lm) == "planned":
        return 1
    return student.max_iters + 1 if student.tool_names else 1


def _step(module: dspy.Module, inputs: dict[str, Any]) -> Steps:
    return (yield Predict(module, inputs))


def ask(module: dspy.Module, inputs: dict[str, Any]) -> dspy.Prediction:
    """One predictor call through `programs.steps`, so the compile's budget guard sees it."""
    return run_sync(_step(module, inputs))


def render(fields: dict[str, Any] | None) -> str:
    """Example fields as one line for a prompt: a single field's value, or "name: value; ..."."""
    if not fields:
        return "(none)"
    if len(fields) == 1:
        return str(next(iter(fields.values())))
    return "; ".join(f"{k}: {v}" for k, v in fields.items())


def mean_score(records: list[dict]) -> float | None:
    """The mean metric score of simulated records, or None if none was scored."""
    scores = [r["score"] for r in records if r.get("score") is not None]
    return sum(scores) / len(scores) if scores else None


def usage_delta(before: Any, after: Any) -> dict[str, Any]:
    """What was spent between two `UsageReport`s."""
    return {
        "calls": after.calls - before.calls,
        "prompt_tokens": after.prompt_tokens - before.prompt_tokens,
        "completion_tokens": after.completion_tokens - before.completion_tokens,
        "seconds": round(after.seconds - before.seconds, 3),
    }


class Simulation:
    """Simulates an agent on examples (in parallel) and critiques the misses.

    Args:
        sim_lm / critic_lm: LMs for the simulation and for the loss (default: the configured LM).
        num_threads: parallel simulations and losses.
    """

    def __init__(
        self, *, sim_lm: dspy.LM | None = None, critic_lm: dspy.LM | None = None, num_threads: int = 4
    ) -> None:
        self.sim_lm = sim_lm
        self.critic_lm = critic_lm
        self.num_threads = max(1, int(num_threads))
        self.loss = dspy.Predict(TextualLoss)

    def critic(self) -> Any:
        """The context the loss (and PersonaAligner's gradient and update) run in."""
        return dspy.context(lm=self.critic_lm) if self.critic_lm is not None else nullcontext()

    def simulate(self, agent: PersonaAgent, examples: Sequence[dspy.Example], metric: Metric | None) -> list[dict]:
        """Run `agent` on each example (in parallel, at the example's `as_of`); one record per example."""
        outputs = list(agent.task_signature.output_fields)

        def one(example: dspy.Example) -> dict[str, Any]:
            record: dict[str, Any] = {
                "inputs": jsonable(dict(example.inputs())),
                "ground_truth": {k: jsonable(example[k]) for k in outputs},
            }
            try:
                with dspy.context(lm=self.sim_lm) if self.sim_lm is not None else nullcontext():
                    pred = agent(**example.inputs(), as_of=example.get(AS_OF))
            except (AdapterParseError, ValueError) as exc:  # this example failed; the compile goes on
                record.update(simulated=None, error=f"{type(exc).__name__}: {exc}", score=0.0, trajectory=[])
                return record
            record["simulated"] = {k: jsonable(pred[k]) for k in outputs}
            record["trajectory"] = jsonable(pred.get("trajectory", []))
            if pred.get("evidence") is not None:  # a planned answer's evidence: its weights are fitted on it
                record["evidence"] = jsonable(pred["evidence"])
            record["score"] = float(metric(example, pred)) if metric is not None else None
            return record

        return thread_map(one, list(examples), self.num_threads)

    def critique(self, persona: Persona, records: list[dict]) -> None:
        """Fill `matches` and `critique` in each record (a perfect metric score needs no loss call)."""

        def one(record: dict) -> None:
            if record.get("score") == 1.0:
                record.update(matches=True, critique="matches (metric)")
                return
            simulated = record["simulated"]
            if simulated is None:
                record.update(matches=False, critique=f"the agent failed: {record['error']}")
                return
            with self.critic():
                out = ask(
                    self.loss,
                    {
                        "persona": persona.text,
                        "request": render(record["inputs"]),
                        "simulated_response": render(simulated),
                        "ground_truth_response": render(record["ground_truth"]),
                    },
                )
            matched = bool(out.matches) if record.get("score") is None else False
            record.update(matches=matched, critique=str(out.critique).strip())

        thread_map(one, records, self.num_threads)
