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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from contextvars import copy_context
from dataclasses import dataclass
from typing import Any, Literal

import dspy
from dspy.teleprompt import Teleprompter
from dspy.utils.exceptions import AdapterParseError

from persona_agent.errors import InvalidInputError
from persona_agent.optimizers.budget import Budget, BudgetExhaustedError
from persona_agent.optimizers.metrics import exact_match
from persona_agent.optimizers.trainset import AS_OF
from persona_agent.programs.persona import (
    INSTRUCTIONS_HEADING,
    NO_PROFILE,
    PROFILE_HEADING,
    Persona,
    init_persona,
    persona_sections,
)
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.prompt_echo import aligner_prompt
from persona_agent.programs.steps import STEP_GUARD, Predict, Steps, run_sync
from persona_agent.signatures.alignment import PersonaEdit, PersonaGradient, PersonaUpdate, TextualLoss
from persona_agent.signatures.tasks import labels_of
from persona_agent.stores.validation import validate_k
from persona_agent.usage import track_usage

Metric = Callable[..., float]
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def _unwrap(proposed: str) -> str:
    """The text inside a code fence or a pair of quotes wrapped around the whole proposal (an LM's habit);
    a fence or quote that only ends the text is part of it."""
    text = proposed.strip()
    fenced = re.fullmatch(r"```[\w-]*\n(.*?)\n?```", text, flags=re.S)
    if fenced:
        text = fenced.group(1).strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _subheadings(text: str, keep: tuple[str, ...] = ()) -> str:
    """Demote each `## ` line not named in `keep` to `### `, so it cannot start a persona section."""
    lines = text.splitlines()
    return "\n".join(f"#{ln}" if ln.startswith("## ") and ln[3:].strip() not in keep else ln for ln in lines)


@dataclass(frozen=True)
class CompileEstimate:
    """The most LM calls a compile can make, by phase (simulation, loss, gradient, update, evaluation).

    Early finishes (the agent stops calling tools, matched examples skip their loss, an all-match batch
    skips the update) make fewer; adapter retries on unparseable output can add one per retry."""

    iterations: int
    simulate: int
    loss: int
    gradient: int
    update: int
    evaluate: int

    @property
    def max_lm_calls(self) -> int:
        return self.simulate + self.loss + self.gradient + self.update + self.evaluate

    def as_dict(self) -> dict[str, int]:
        return {
            "iterations": self.iterations,
            "simulate": self.simulate,
            "loss": self.loss,
            "gradient": self.gradient,
            "update": self.update,
            "evaluate": self.evaluate,
            "max_lm_calls": self.max_lm_calls,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
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


class PersonaAligner(Teleprompter):
    """Compile a user's persona from that user's latest interactions (the paper's test-time alignment).

    Args:
        metric: `metric(example, prediction, trace=None) -> float` in [0, 1]; default exact match for
            label tasks. A perfect score counts as a match (no loss call); without a metric, the loss
            LM judges matches.
        n: how many of the user's latest interactions form the batch (the paper's n = 3).
        iterations: simulate -> loss -> gradient -> update rounds (the paper: gains plateau after ~3).
        accept: "always" takes every update (the paper); "improve" keeps an update only if the metric
            on `valset` (or the batch) does not fall.
        sim_lm / critic_lm: LMs for simulation and for loss/gradient/update (default: the configured LM).
        max_persona_chars: the persona's length cap.
        update: "rewrite" has the LM write the whole new persona (the paper's step); "edit" asks only
            for statements to add and sentences to remove and applies them in code, for small models
            that copy a persona back unchanged when asked to rewrite it.
        max_lm_calls / max_tokens / max_seconds: the compile's budget.
        num_threads: parallel simulations.
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
    ) -> None:
        super().__init__()
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
        self.sim_lm = sim_lm
        self.critic_lm = critic_lm
        self.max_persona_chars = max_persona_chars
        self.budget = Budget(max_lm_calls, max_tokens, max_seconds)
        self.num_threads = max(1, int(num_threads))
        self.loss = dspy.Predict(TextualLoss)
        self.gradient = dspy.Predict(PersonaGradient)
        self.update_mode = update
        self.update = dspy.Predict(PersonaUpdate if update == "rewrite" else PersonaEdit)

    # -- planning -----------------------------------------------------------------------------------

    def _steps_per_example(self, student: PersonaAgent) -> int:
        return student.max_iters + 1 if student.tool_names else 1

    def _metric_for(self, student: PersonaAgent) -> Metric | None:
        if self.metric is not None:
            return self.metric
        return exact_match if labels_of(student.task_signature) is not None else None

    def estimate(
        self, trainset: Sequence[dspy.Example], *, student: PersonaAgent, valset: Sequence[dspy.Example] | None = None
    ) -> CompileEstimate:
        """The most LM calls `compile(student, trainset=..., valset=...)` will make, before it runs."""
        batch = min(self.n, len(trainset))
        per = self._steps_per_example(student)
        t = self.iterations
        evaluate = 0
        if self.accept == "improve":
            evaluate = t * per * (len(valset) if valset else batch) + (per * len(valset) if valset else 0)
        return CompileEstimate(t, t * batch * per, t * batch, t, t, evaluate)

    # -- phases -------------------------------------------------------------------------------------

    def simulate(self, agent: PersonaAgent, examples: Sequence[dspy.Example], metric: Metric | None) -> list[dict]:
        """Run `agent` on each example (in parallel, at the example's `as_of`); one record per example."""
        outputs = list(agent.task_signature.output_fields)

        def one(example: dspy.Example) -> dict[str, Any]:
            record: dict[str, Any] = {
                "inputs": _jsonable(dict(example.inputs())),
                "ground_truth": {k: _jsonable(example[k]) for k in outputs},
            }
            try:
                with dspy.context(lm=self.sim_lm) if self.sim_lm is not None else nullcontext():
                    pred = agent(**example.inputs(), as_of=example.get(AS_OF))
            except (AdapterParseError, ValueError) as exc:  # this example failed; the compile goes on
                record.update(simulated=None, error=f"{type(exc).__name__}: {exc}", score=0.0, trajectory=[])
                return record
            record["simulated"] = {k: _jsonable(pred[k]) for k in outputs}
            record["trajectory"] = _jsonable(pred.get("trajectory", []))
            record["score"] = float(metric(example, pred)) if metric is not None else None
            return record

        return thread_map(one, list(examples), self.num_threads)

    def _critic(self) -> Any:
        return dspy.context(lm=self.critic_lm) if self.critic_lm is not None else nullcontext()

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
            with self._critic():
                out = run_sync(
                    self._predict(
                        self.loss,
                        {
                            "persona": persona.text,
                            "request": _render(record["inputs"]),
                            "simulated_response": _render(simulated),
                            "ground_truth_response": _render(record["ground_truth"]),
                        },
                    )
                )
            matched = bool(out.matches) if record.get("score") is None else False
            record.update(matches=matched, critique=str(out.critique).strip())

        thread_map(one, records, self.num_threads)

    @staticmethod
    def _predict(module: dspy.Module, inputs: dict[str, Any]) -> Steps:
        return (yield Predict(module, inputs))

    def _gradient_and_update(self, persona: Persona, records: list[dict]) -> tuple[str, str]:
        losses = "\n\n".join(
            f"{i}. request: {_render(r['inputs'])}\n   agent said: {_render(r['simulated']) if r['simulated'] else '(failed)'}"
            f"\n   user wanted: {_render(r['ground_truth'])}\n   critique: {r['critique']}"
            for i, r in enumerate((r for r in records if not r["matches"]), 1)
        )
        with self._critic():
            gradient = run_sync(self._predict(self.gradient, {"persona": persona.text, "losses": losses})).gradient
            if self.update_mode == "edit":
                edit = run_sync(self._predict(self.update, {"persona": persona.text, "gradient": gradient}))
                return str(gradient).strip(), apply_edits(persona.text, edit.add or [], edit.remove or [])
            proposed = run_sync(
                self._predict(
                    self.update,
                    {"persona": persona.text, "gradient": gradient, "max_chars": self.max_persona_chars},
                )
            ).new_persona
        return str(gradient).strip(), str(proposed)

    def constrain(self, current: str, proposed: str) -> tuple[str | None, str]:
        """Hold a proposed persona to the two-part structure, the template variables and the length cap,
        and reject one that echoes the aligner's own prompt (`aligner_prompt`). Returns (text or None if it
        must be rejected, note). Idempotent: a text it returns passes again as is.

        Any other `## ` heading becomes a `### ` subheading of the section it is in: its text is kept, and
        it cannot split a section when the persona is read again."""
        text = _unwrap(proposed)
        if not text:
            return None, "empty update"
        echoed = aligner_prompt().note(text, allowed=current)
        if echoed:
            return None, echoed
        profile_key, instr_key = PROFILE_HEADING[3:], INSTRUCTIONS_HEADING[3:]
        old, new = persona_sections(current), persona_sections(_subheadings(text, keep=(profile_key, instr_key)))
        note = "ok"
        if profile_key not in new and instr_key not in new:  # a bare rewrite: take it as the profile
            new = {profile_key: text, instr_key: old.get(instr_key, "")}
            note = "no headings: kept as profile, instructions unchanged"
        else:
            for key in (profile_key, instr_key):
                if not new.get(key):
                    new[key] = old.get(key, "")
                    note = f"missing '{key}' section restored"
        instructions = _subheadings(new[instr_key].strip())
        budget = self.max_persona_chars - len(PROFILE_HEADING) - len(INSTRUCTIONS_HEADING) - len(instructions) - 4
        profile = _subheadings(new[profile_key].strip())
        if budget < 40:
            return None, "instructions alone exceed the length cap"
        if len(profile) > budget:
            cut = profile[:budget]
            end = cut.rfind(". ")
            profile = cut[: end + 1] if end > budget // 2 else cut.rstrip()
            note = "profile shortened to the length cap"
        result = f"{PROFILE_HEADING}\n{profile}\n\n{INSTRUCTIONS_HEADING}\n{instructions}"
        lost = set(_PLACEHOLDER.findall(current)) - set(_PLACEHOLDER.findall(result))
        if lost:
            return None, f"template variables lost: {sorted(lost)}"
        return result, note

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
        metric = self._metric_for(student)
        if self.accept == "improve" and metric is None:
            raise InvalidInputError("metric", None, "accept='improve' needs a metric for this free-text task")
        batch = list(trainset)[-self.n :]
        estimate = self.estimate(batch, student=student, valset=valset)
        persona = student.persona or init_persona(student.user_id)
        agent = student.with_persona(persona)
        trace: dict[str, Any] = {
            "strategy": "persona_aligner",
            "user_id": student.user_id,
            "config": {
                "n": self.n,
                "iterations": self.iterations,
                "accept": self.accept,
                "max_persona_chars": self.max_persona_chars,
                "update": self.update_mode,
                "budget": _jsonable(self.budget.__dict__),
                "metric": getattr(metric, "__name__", None),
            },
            "estimate": estimate.as_dict(),
            "initial_persona": persona.to_dict(),
            "iterations": [],
        }
        stop_reason = "completed"
        started = time.perf_counter()
        with track_usage() as meter, dspy.context(**{STEP_GUARD: self.budget.guard(meter)}):
            val_score = None
            try:
                if self.accept == "improve" and valset:
                    val_score = _mean(self.simulate(agent, valset, metric))
                current: list[dict] | None = None
                for it in range(self.iterations):
                    before = meter.report()
                    step: dict[str, Any] = {
                        "iteration": it,
                        "persona_version": persona.version,
                        "persona": persona.text,
                    }
                    trace["iterations"].append(step)
                    records = current if current is not None else self.simulate(agent, batch, metric)
                    current = None
                    step["examples"] = records
                    step["metric"] = _mean(records)
                    self.critique(persona, records)
                    if all(r["matches"] for r in records):
                        step["skipped"] = "every simulated response matches"
                        step["usage"] = _delta(before, meter.report())
                        stop_reason = "all_match"
                        break
                    gradient, proposed = self._gradient_and_update(persona, records)
                    step["gradient"], step["proposed_persona"] = gradient, proposed
                    text, note = self.constrain(persona.text, proposed)
                    step["constraint"] = note
                    if text is None or text == persona.text:
                        step["accepted"] = False
                        step["usage"] = _delta(before, meter.report())
                        continue
                    candidate = persona.revise(text)
                    candidate_agent = student.with_persona(candidate)
                    if self.accept == "improve":
                        if valset:
                            new_score, old_score = _mean(self.simulate(candidate_agent, valset, metric)), val_score
                        else:
                            evaluated = self.simulate(candidate_agent, batch, metric)
                            new_score, old_score = _mean(evaluated), step["metric"]
                        step["candidate_metric"] = new_score
                        step["accepted"] = new_score is not None and old_score is not None and new_score >= old_score
                        if step["accepted"]:
                            val_score = new_score if valset else val_score
                            current = None if valset else evaluated
                    else:
                        step["accepted"] = True
                    if step["accepted"]:
                        persona, agent = candidate, candidate_agent
                    step["usage"] = _delta(before, meter.report())
            except BudgetExhaustedError as exc:
                stop_reason = f"budget: {exc.reason}"
                if trace["iterations"]:
                    trace["iterations"][-1]["stopped"] = stop_reason
        # `persona` is the last accepted one: under "always" every update (the paper), under "improve"
        # only updates that did not lower the metric, so it is also the best so far.
        final = persona
        usage = meter.report()
        compiled = student.with_persona(final)
        trace.update(
            stop_reason=stop_reason,
            final_persona=final.to_dict(),
            usage=usage.as_dict(),
            seconds=round(time.perf_counter() - started, 3),
        )
        compiled.alignment_trace = _jsonable(trace)
        return compiled


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


def _render(fields: dict[str, Any] | None) -> str:
    if not fields:
        return "(none)"
    if len(fields) == 1:
        return str(next(iter(fields.values())))
    return "; ".join(f"{k}: {v}" for k, v in fields.items())


def _mean(records: list[dict]) -> float | None:
    scores = [r["score"] for r in records if r.get("score") is not None]
    return sum(scores) / len(scores) if scores else None


def _delta(before: Any, after: Any) -> dict[str, Any]:
    return {
        "calls": after.calls - before.calls,
        "prompt_tokens": after.prompt_tokens - before.prompt_tokens,
        "completion_tokens": after.completion_tokens - before.completion_tokens,
        "seconds": round(after.seconds - before.seconds, 3),
    }
