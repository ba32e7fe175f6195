"""Compiling a user's persona end to end: plan (validate, pick the batch, estimate), run the optimizer, then
commit (`Workspace.commit_version`: a new registry version, its MLflow run, promote). The CLI prints the plan's estimate before running;
the service runs the same two steps as a background job.

GEPA and COPRO hold each proposal to PersonaAligner's constraints unless `constrain` is off (the published
search); a persona they return that fails those checks (`persona_check`) is registered and tracked but not
made live unless `promote_flagged` is set.

The alignment batch is the user's latest interactions that carry a real response: rows the agent wrote itself
(recorded answers, `update_memory` notes) are never taken as ground truth.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from persona_agent.core.errors import InvalidInputError, UnknownUserError
from persona_agent.lifecycle import CompileCancelledError, Draft, RunDetails
from persona_agent.optimizers.factory import Strategy, optimizer_for
from persona_agent.optimizers.trainset import example_from_interaction
from persona_agent.programs.persona import Persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.tools import ToolContext, make_tools
from persona_agent.signatures.tasks import labels_of
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.personas import LiveState, PersonaRecord
from persona_agent.stores.validation import validate_user_id
from persona_agent.workspace import Workspace

AGENT_SOURCE = "agent"
__all__ = [
    "CompileCancelledError",
    "CompileOptions",
    "CompilePlan",
    "CompileResult",
    "alignment_examples",
    "compile_user",
    "optimizer_of",
    "plan_compile",
    "run_compile",
    "search_k",
]


class CompileOptions(BaseModel):
    """How to compile one user's persona (the CLI's options and the service's request body)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(default=3, ge=1, le=50, description="latest interactions in the alignment batch")
    iterations: int = Field(default=1, ge=1, le=10, description="alignment rounds (COPRO: depth)")
    strategy: Strategy = "persona_aligner"
    accept: Literal["always", "improve"] = "always"
    update: Literal["rewrite", "edit"] = Field(
        default="rewrite", description="rewrite the whole persona (the paper), or edit: statements added/removed"
    )
    max_lm_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_seconds: float | None = Field(default=None, gt=0)
    constrain: bool = Field(
        default=True,
        description="GEPA/COPRO: hold each proposal to PersonaAligner's checks before it is scored (False: as published)",
    )
    promote: bool = Field(default=True, description="make the new version live when it differs")
    promote_flagged: bool = Field(
        default=False,
        description="also make live a GEPA/COPRO persona that fails PersonaAligner's checks (see persona_check)",
    )
    register_model: bool | None = Field(default=None, description="default: the mlflow_register_models setting")

    @classmethod
    def parse(cls, **values: Any) -> CompileOptions:
        """Validate, raising `InvalidInputError` naming the first bad field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(p) for p in error["loc"]) or "options"
            raise InvalidInputError(field, error.get("input"), error["msg"]) from None


class CompileResult(BaseModel):
    """What a compile did: the version it produced (or the unchanged base), its run, promote, estimate and cost."""

    user_id: str
    version: int
    parent: int
    changed: bool
    promoted: bool
    mlflow_run_id: str | None
    model_version: str | None = None
    tracking_error: str | None = None
    strategy: str
    stop_reason: str
    estimate: dict[str, Any]
    scores: dict[str, Any]
    usage: dict[str, Any]
    seconds: float
    persona_check: str = "ok"
    """GEPA/COPRO: what PersonaAligner's checks say of the returned persona. A flagged version is registered and
    tracked but not made live unless `promote_flagged`: review it, then promote it by hand."""
    trace: dict[str, Any] = Field(default_factory=dict, repr=False)
    """The alignment trace (per iteration: persona, simulated outputs, losses, gradient, metric, usage), also
    logged to the MLflow run as `alignment_trace.json`."""


@dataclass
class CompilePlan:
    """Everything a compile needs, checked before any LM call."""

    user_id: str
    options: CompileOptions
    live: LiveState
    base: PersonaRecord
    base_agent: PersonaAgent
    student: PersonaAgent
    trainset: list[dspy.Example]
    optimizer: Any
    estimate: dict[str, Any]
    epoch: int
    register_model: bool


def alignment_examples(store: MemoryStore, user_id: str, signature: type[dspy.Signature], n: int) -> list:
    """The user's latest `n` interactions with a real response, oldest first, as examples (with `as_of`)."""
    rows = [
        i
        for i in store.history(user_id)
        if i.response.strip() and i.metadata.get("source") != AGENT_SOURCE and i.task != "note"
    ]
    return [example_from_interaction(i, signature) for i in rows[-n:]]


def _optimizer(options: CompileOptions) -> Any:
    return optimizer_for(
        options.strategy,
        n=options.n,
        iterations=options.iterations,
        accept=options.accept,
        update=options.update,
        max_lm_calls=options.max_lm_calls,
        max_tokens=options.max_tokens,
        max_seconds=options.max_seconds,
        constrain=options.constrain,
    )


def optimizer_of(options: CompileOptions) -> Any:
    """The optimizer a compile with these options runs (a worker in another process rebuilds it from them)."""
    return _optimizer(options)


def plan_compile(workspace: Workspace, user_id: str, options: CompileOptions | None = None) -> CompilePlan:
    """Validate and prepare a compile (no LM call): raises on bad input before anything is written, except the
    user's initial persona (version 0), which is created if missing."""
    options = options or CompileOptions()
    user_id = validate_user_id(user_id)
    if workspace.store.count(user_id) == 0:
        raise UnknownUserError(user_id)
    epoch = workspace.forget_epoch(user_id)
    live = workspace.registry.live(user_id)
    signature = workspace.program(user_id, live.version)[0].task_signature if live else workspace.spec.signature
    trainset = alignment_examples(workspace.store, user_id, signature, options.n)
    if not trainset:  # checked before the initial persona is created: bad input writes nothing
        raise InvalidInputError(
            "user_id", user_id, "has no interactions with a response to align on: ingest some, or send feedback"
        )
    if (options.strategy != "persona_aligner" or options.accept == "improve") and labels_of(signature) is None:
        field = "accept" if options.strategy == "persona_aligner" else "strategy"
        raise InvalidInputError(
            field,
            getattr(options, field),
            f"needs a metric, and {signature.__name__} is a free-text task (new users get a labelled one "
            "from the task_signature setting, e.g. PERSONA_AGENT_TASK_SIGNATURE=CategorizeArticle)",
        )
    base_agent, _ = workspace.program(user_id, None)
    live = workspace.registry.live(user_id)
    base = workspace.registry.get(user_id, live.version)
    # Simulations must not write notes into the user's memory: the student never offers update_memory.
    student = workspace.build_agent(user_id, base.version, allow_updates=False)
    optimizer = _optimizer(options)
    if options.strategy == "persona_aligner":
        estimate = optimizer.estimate(trainset, student=student).as_dict()
    else:
        estimate = {"max_lm_calls": optimizer.budget.max_lm_calls}
    register = workspace.settings.mlflow_register_models if options.register_model is None else options.register_model
    return CompilePlan(
        user_id, options, live, base, base_agent, student, trainset, optimizer, estimate, epoch, register
    )


def _scores(trace: dict[str, Any]) -> dict[str, Any]:
    metrics = [step.get("metric") for step in trace.get("iterations", []) if step.get("metric") is not None]
    accepted = [
        step["candidate_metric"]
        for step in trace.get("iterations", [])
        if step.get("accepted") and step.get("candidate_metric") is not None
    ]
    scores: dict[str, Any] = {}
    if metrics:
        scores["metric_initial"] = metrics[0]
        scores["metric_final"] = accepted[-1] if accepted else metrics[-1]
    return scores


def search_k(store: MemoryStore) -> int | None:
    """The default K of the agent's memory search (the LM may ask for another, up to 10)."""
    tools = make_tools(ToolContext(user_id="k", store=store), ["search_memory"])
    return tools[0].args.get("k", {}).get("default") if tools else None


def _params(workspace: Workspace, plan: CompilePlan) -> dict[str, Any]:
    """The MLflow run's parameters of a compile."""
    options = plan.options
    params = {
        "strategy": options.strategy,
        "n": options.n,
        "iterations": options.iterations,
        "accept": options.accept,
        "update": options.update,
        "lm": getattr(workspace.lm, "model", type(workspace.lm).__name__),
        "k": search_k(workspace.store),
        "max_lm_calls": options.max_lm_calls,
        "max_tokens": options.max_tokens,
        "max_seconds": options.max_seconds,
        "trainset_size": len(plan.trainset),
        "signature": plan.base_agent.task_signature.__name__,
        "estimate_max_lm_calls": plan.estimate.get("max_lm_calls"),
    }
    if options.strategy != "persona_aligner":
        params["constrain"] = options.constrain
    return params


def run_compile(workspace: Workspace, plan: CompilePlan) -> CompileResult:
    """Run the optimizer under the workspace's LM, then commit: registry version, MLflow run, promote."""
    started = time.perf_counter()
    with workspace.lm_context():
        compiled = plan.optimizer.compile(plan.student, trainset=plan.trainset)
    trace = dict(getattr(compiled, "alignment_trace", {}) or {})
    user, options, base = plan.user_id, plan.options, plan.base
    changed = compiled.persona is not None and compiled.persona.text != base.text
    check = str(trace.get("persona_check", "ok"))
    promote = changed and options.promote and (check == "ok" or options.promote_flagged)
    scores, usage = _scores(trace), dict(trace.get("usage", {}))
    version: Draft | PersonaRecord = base
    if changed:
        persona = Persona(user_id=user, text=compiled.persona.text, source="aligned")
        agent = plan.base_agent.rebind(user, persona)
        version = Draft(persona.text, agent, base.version, strategy=options.strategy, scores=scores, usage=usage)
    run = RunDetails(
        params=_params(workspace, plan),
        register_model=plan.register_model and promote,
        trace=trace,
        changed=changed,
        strict=True,
        shown={"usage": usage, "scores": scores, "strategy": options.strategy},
    )
    done = workspace.commit_version(
        user,
        version,
        previous=base.version,
        run=run,
        promote=promote,
        expected_revision=plan.live.revision,
        register_model=plan.register_model,
        epoch=plan.epoch,
    )
    return CompileResult(
        user_id=user,
        version=done.record.version,
        parent=base.version,
        changed=changed,
        promoted=promote,
        mlflow_run_id=done.run_id,
        model_version=done.model_version,
        tracking_error=done.tracking_error,
        strategy=options.strategy,
        stop_reason=str(trace.get("stop_reason", "completed")),
        estimate=plan.estimate,
        scores=scores,
        usage=usage,
        seconds=round(time.perf_counter() - started, 3),
        persona_check=check,
        trace=trace,
    )


def compile_user(workspace: Workspace, user_id: str, options: CompileOptions | None = None) -> CompileResult:
    """Plan and run one compile."""
    return run_compile(workspace, plan_compile(workspace, user_id, options))
