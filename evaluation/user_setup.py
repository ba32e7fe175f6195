"""One user's set-up before any answer: memory, profile, personas (initial and aligned), and the programs.

Steps 1-3 of `user_run` (see its docstring): the memory holds `memory_items(user)`; the profile is built once
from it, the initial persona from the profile; each alignment strategy runs once per user on the n items just
before the first query, under an LM-call budget, and falls back to the initial persona on failure, its error
in the set-up row. The profile and personas are cached per user (`StateCache`) so a resumed run reuses them;
a set-up row records each build's cost, written again when the log lost the row of the cached build.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import dspy

from persona_agent.core.records import EvalUser
from persona_agent.core.usage import track_usage
from persona_agent.evaluation.persist import Row, text_digest
from persona_agent.evaluation.plan import MethodSpec, TaskSetup, alignment_metric
from persona_agent.evaluation.run_state import RunState, describe, fatal, item_time, memory_items, usage_fields
from persona_agent.optimizers.copro import DEPTH as COPRO_DEPTH
from persona_agent.optimizers.evidence_fit import evidence_records, fit_weights
from persona_agent.optimizers.factory import optimizer_for
from persona_agent.optimizers.simulation import Simulation
from persona_agent.programs import Persona, PersonaAgent, ProfileBuilder, init_persona, make_method
from persona_agent.programs.evidence import EvidenceWeights
from persona_agent.stores.memory import MemoryStore

logger = logging.getLogger(__name__)


CHECK_N = 6  # held-out earlier items a planned alignment is checked on (and its evidence weights fitted on)


def alignment_examples(
    user: EvalUser, setup: TaskSetup, n: int, *, as_of_input: bool = False, skip_last: int = 0
) -> list[dspy.Example]:
    """The n items just before the first query (after leaving out the `skip_last` latest) as examples, each
    simulated at its own time (`as_of`), so nothing after an item's time is visible to it.

    PersonaAligner and GEPA pass an example's `as_of` to the agent themselves. COPRO scores through DSPy's
    `Evaluate`, which calls the program with `example.inputs()` only, so for it `as_of` must be an input:
    otherwise its simulations search the whole memory, the simulated item itself included.
    """
    inputs = (setup.input_field, "as_of") if as_of_input else (setup.input_field,)
    items = user.first_alignment_batch(n + skip_last)
    return [
        dspy.Example({setup.input_field: it.input, setup.output_field: it.output, "as_of": item_time(it)}).with_inputs(
            *inputs
        )
        for it in items[: len(items) - skip_last]
    ]


def checked_split(
    user: EvalUser, setup: TaskSetup, n: int, check_n: int
) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """(batch, held-out): the latest n items before the first query, and the `check_n` just before those."""
    return alignment_examples(user, setup, n), alignment_examples(user, setup, check_n, skip_last=n)


def _records_build(row: Row, entry: dict[str, Any]) -> bool:
    """Whether a logged profile row was written from this cached build: the row copies the build's usage,
    timed to the millisecond, so a rebuild differs; rows written since digests existed must match the text."""
    if "profile_sha" in row and row["profile_sha"] != text_digest(entry.get("text")):
        return False
    return all(row.get(name) == value for name, value in entry["usage"].items())


class UserSetup:
    """A user's memory, profile, personas and programs, built on first use and cached across resumes."""

    def __init__(self, run: RunState, user: EvalUser) -> None:
        self.run = run
        self.user = user
        self.config = run.config
        self.setup = run.setup
        self.items = memory_items(user)
        self.first = user.queries[0]
        self.state = run.state.load(user.user_id)
        self.store: MemoryStore | None = None
        self.profile_text: str | None = None
        self.personas: dict[str, Persona] = {}
        self.programs: dict[str, dspy.Module] = {}
        self.weights: dict[str, EvidenceWeights] = {}  # a planned alignment's fitted evidence weights

    def open_memory(self) -> None:
        store = MemoryStore(":memory:", embedder=self.run.embedder)
        store.add(
            self.user.user_id,
            [
                {
                    "query": it.input,
                    "response": it.output,
                    "task": self.setup.task.name,
                    "created_at": item_time(it),
                    "metadata": {"item_id": it.id},
                }
                for it in self.items
            ],
        )
        self.store = store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def _setup_row(self, stage: str, entry: dict[str, Any], *, fresh: bool, **extra: Any) -> None:
        """Record a set-up's cost: when `fresh` (just computed, or the log records another build), or when
        the log lacks it (a crash between saving the state and writing the row)."""
        if not fresh and ("setup", stage, self.user.key) in self.run.done:
            return
        row = {
            "kind": "setup",
            "task": self.setup.task.name,
            "stage": stage,
            "user": self.user.key,
            "error": entry.get("error"),
            **entry["usage"],
            **extra,
        }
        self.run.record(row, example=False)

    # -- profile --------------------------------------------------------------------------------------

    def build_profile(self) -> None:
        """The profile (semantic memory) into `profile_text`: from the cache, or built and cached."""
        cached = self.state.get("profile")
        fresh = cached is None
        if fresh:
            if ("setup", "profile", self.user.key) in self.run.done:
                logger.warning(
                    "%s: the log holds rows made under this user's profile, but its cached copy in %s is gone; "
                    "building it again. The LM may write another profile: the report compares answers only "
                    "with those made under the same build.",
                    self.user.key,
                    self.run.state.directory,
                )
            cached = self._new_profile()
            self.state["profile"] = cached
            self.run.state.save(self.user.user_id, self.state)
        else:
            if cached.get("text"):
                self.store.set_profile(self.user.user_id, cached["text"])  # a fresh store: restore semantic memory
            logged = self.run.done.get(("setup", "profile", self.user.key))
            if logged is not None and not _records_build(logged, cached):
                logger.warning(
                    "%s: the profile cached in %s is not the build the log records last (was the log cut after "
                    "it was built?); recording its row again from the cache, so answers are paired by the "
                    "profile they were made under.",
                    self.user.key,
                    self.run.state.directory,
                )
                fresh = True
        self._setup_row("profile", cached, fresh=fresh, profile_sha=text_digest(cached.get("text")))
        self.profile_text = cached.get("text")

    def _new_profile(self) -> dict[str, Any]:
        """Build the profile from memory as of the first query; a non-fatal failure is kept as its error."""
        self.run.status(f"{self.user.key} · profile")
        builder = ProfileBuilder(max_records=self.config.profile_records)
        started = time.perf_counter()
        with track_usage() as meter:
            try:
                text, error = builder.build(self.store, self.user.user_id, before=item_time(self.first)).text, None
            except Exception as exc:
                if fatal(exc):
                    raise
                text, error = None, describe(exc)
        usage = {**usage_fields(meter.report()), "seconds": round(time.perf_counter() - started, 3)}
        return {"text": text, "error": error, "usage": usage}

    # -- personas -------------------------------------------------------------------------------------

    def _optimizer(self, strategy: str, log_dir: str) -> Any:
        # GEPA and COPRO are the published baselines here: they search unconstrained, as the runs' rows were made;
        # COPRO at its own depth (the iterations are PersonaAligner's).
        return optimizer_for(
            strategy,
            metric=alignment_metric(self.setup.task),
            n=self.config.align_n,
            iterations=self.config.align_iterations,
            max_lm_calls=self.config.align_budget,
            num_threads=self.run.align_threads,
            constrain=False,
            seed=self.config.seed,
            log_dir=log_dir,
            depth=COPRO_DEPTH,
        )

    def persona(self, spec: MethodSpec) -> Persona | None:
        """The persona a method runs with: none, the initial one, or its strategy's alignment (cached)."""
        if spec.persona == "none":
            return None
        if "initial" not in self.personas:
            self.personas["initial"] = init_persona(self.user.user_id, self.profile_text)
        if spec.persona == "initial":
            return self.personas["initial"]
        strategy = spec.alignment_key
        if strategy in self.personas:
            return self.personas[strategy]
        alignments = self.state.setdefault("alignments", {})
        cached = alignments.get(strategy)
        fresh = cached is None
        if fresh:
            cached = self._align(spec)
            alignments[strategy] = cached
            self.run.state.save(self.user.user_id, self.state)
        persona = Persona.from_dict(cached["persona"])
        trace = cached.get("trace") or {}
        self._setup_row(
            f"align:{strategy}",
            cached,
            fresh=fresh,
            persona_version=persona.version,
            persona_chars=len(persona.text),
            stop_reason=trace.get("stop_reason"),
            **({"persona_check": trace["persona_check"]} if "persona_check" in trace else {}),
            **(
                {"weights_changed": bool((trace.get("evidence_fit") or {}).get("adopted"))}
                if spec.mode == "planned"
                else {}
            ),
        )
        self.personas[strategy] = persona
        if cached.get("evidence_weights"):
            self.weights[strategy] = EvidenceWeights.from_dict(cached["evidence_weights"])
        return persona

    def _compile(self, spec: MethodSpec, log_dir: str) -> PersonaAgent:
        """The strategy's compile of the initial persona. The planned agent's is PersonaAligner checked on the
        `CHECK_N` earlier items (kept only if strictly better there), its evidence weights fitted on them."""
        strategy = spec.strategy or "persona_aligner"
        if spec.mode == "planned":
            student = self.program("planned", self.personas["initial"])
            trainset, valset = checked_split(self.user, self.setup, self.config.align_n, CHECK_N)
            optimizer = optimizer_for(
                strategy,
                metric=alignment_metric(self.setup.task),
                n=self.config.align_n,
                iterations=self.config.align_iterations,
                accept="improve",
                max_lm_calls=self.config.align_budget,
                num_threads=self.run.align_threads,
            )
            return optimizer.compile(student, trainset=trainset, valset=valset or None)
        student = self.program("persona_agent", self.personas["initial"])
        trainset = alignment_examples(self.user, self.setup, self.config.align_n, as_of_input=strategy == "copro")
        return self._optimizer(strategy, log_dir).compile(student, trainset=trainset)

    def _align(self, spec: MethodSpec) -> dict[str, Any]:
        """Align the initial persona with one strategy; a non-fatal failure falls back to it, its error kept."""
        self.run.status(f"{self.user.key} · align:{spec.alignment_key}")
        weights = None
        with tempfile.TemporaryDirectory(prefix="eval-align-") as log_dir:
            started = time.perf_counter()
            with track_usage() as meter:
                try:
                    compiled = self._compile(spec, log_dir)
                    persona, trace, error = compiled.persona, compiled.alignment_trace, None
                    weights = compiled.evidence_weights.to_dict() if spec.mode == "planned" else None
                except Exception as exc:
                    if fatal(exc):
                        raise
                    persona, trace, error = self.personas["initial"], None, describe(exc)  # fall back, recorded
            seconds = time.perf_counter() - started
            run_log = Path(log_dir) / "run_log.txt"  # GEPA's progress log (`GEPARunLog`)
            log_tail = run_log.read_text(encoding="utf-8")[-4000:] if run_log.exists() else ""
        usage = {**usage_fields(meter.report()), "seconds": round(seconds, 3)}
        cached = {"persona": persona.to_dict(), "trace": trace, "error": error, "usage": usage}
        if weights is not None:
            cached["evidence_weights"] = weights
        if log_tail:
            cached["log_tail"] = log_tail
        return cached

    # -- programs -------------------------------------------------------------------------------------

    def vote_weights(self) -> EvidenceWeights:
        """The no-LM floor's weights (neighbour vote and label prior), fitted on the same items as the planned
        agent's (batch and held-out) from memory alone; cached per user."""
        cached = self.state.get("vote_weights")
        if cached is None:
            examples = alignment_examples(self.user, self.setup, self.config.align_n + CHECK_N)
            start = EvidenceWeights(lm=0.0, vote=1.0, prior=0.0)
            agent = self.program("planned_no_persona", None, start)
            records = evidence_records(
                Simulation(num_threads=1).simulate(agent, examples, None), self.setup.output_field
            )
            cached = fit_weights(records, start, use_lm=False).weights.to_dict() if records else start.to_dict()
            self.state["vote_weights"] = cached
            self.run.state.save(self.user.user_id, self.state)
        return EvidenceWeights.from_dict(cached)

    def program(self, name: str, persona: Persona | None, weights: EvidenceWeights | None = None) -> dspy.Module:
        return make_method(
            name,
            self.setup.signature,
            store=self.store,
            user_id=self.user.user_id,
            persona=persona,
            knowledge=self.run.knowledge if self.setup.knowledge else None,
            k=self.config.k,
            max_iters=self.config.max_iters,
            evidence_weights=weights,
        )

    def method(self, spec: MethodSpec) -> dspy.Module:
        """A method's program, made once per user (its persona's set-up cost goes into a set-up row)."""
        if spec.name not in self.programs:
            persona = self.persona(spec)
            if spec.name == "vote":
                weights = self.vote_weights()
            else:
                weights = self.weights.get(spec.alignment_key) if spec.persona == "aligned" else None
            self.programs[spec.name] = self.program(spec.program, persona, weights)
        return self.programs[spec.name]
