"""`PersonaAgent`: the paper's memory + action design as one DSPy module.

The user's persona is the instruction of every predictor (on top of the task's own instructions);
the agent runs a ReAct-style loop over tools bound to its user, then gives the typed final answer.

We run our own loop rather than `dspy.ReAct` because tools must be bound per call (to the user and to
the call's time cut-off, `as_of`), the persona must head every predictor's instructions including the
tool protocol, and one loop must serve `forward` and `aforward`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import dspy
from dspy.signatures.signature import ensure_signature
from dspy.utils.exceptions import AdapterParseError

from persona_agent.core.errors import InvalidInputError
from persona_agent.lm.excerpts import error_excerpt
from persona_agent.lm.models import is_local
from persona_agent.programs.evidence import EvidenceWeights, default_weights
from persona_agent.programs.persona import GENERIC_INSTRUCTIONS, Persona
from persona_agent.programs.planned import planned_steps
from persona_agent.programs.steps import Predict, Steps, UseTool, run_async, run_sync
from persona_agent.programs.tools import ALL_TOOLS, ToolContext, make_tools
from persona_agent.signatures.tasks import PersonalizedRequest, labels_of
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.validation import to_utc_naive, validate_k, validate_user_id

logger = logging.getLogger(__name__)

FINISH = "finish"
NO_TRAJECTORY = "(no tool calls yet)"
STATE_KEY = "persona_agent"
Mode = Literal["react", "planned", "auto"]
MODES: tuple[str, ...] = ("react", "planned", "auto")


def resolve_mode(mode: str, lm: dspy.BaseLM | None) -> str:
    """`auto` is planned for the in-process model (a small LM whose tool choice never varies) and ReAct for
    any other LM; an explicit mode stands."""
    if mode != "auto":
        return mode
    return "planned" if lm is not None and is_local(lm) else "react"


def compose_instructions(head: str, task_doc: str, protocol: str | None = None) -> str:
    """Persona (or generic instruction) first, then the task, then the tool protocol if any."""
    parts = [head.strip(), f"## Task\n{task_doc.strip()}"]
    if protocol:
        parts.append(protocol)
    return "\n\n".join(parts)


def tool_protocol(tools: Sequence[dspy.Tool]) -> str:
    lines = [
        "## Tool use",
        "You see the inputs and your trajectory of earlier tool calls and observations. Each turn, write "
        "next_thought, then pick next_tool_name and next_tool_args (a JSON object of that tool's arguments). "
        f"Pick `{FINISH}` with {{}} as arguments once you know enough to answer. The tools are:",
    ]
    for i, tool in enumerate(tools, 1):
        args = ", ".join(f"{name}: {spec.get('type', 'any')}" for name, spec in tool.args.items())
        lines.append(f"({i}) {tool.name}({args}): {' '.join((tool.desc or '').split())}")
    lines.append(f"({len(tools) + 1}) {FINISH}(): stop calling tools; the answer is given next.")
    return "\n".join(lines)


def format_trajectory(trajectory: list[dict[str, Any]]) -> str:
    if not trajectory:
        return NO_TRAJECTORY
    lines = []
    for i, step in enumerate(trajectory):
        lines.append(f"thought_{i}: {step['thought']}")
        lines.append(f"tool_{i}: {step['tool']}({json.dumps(step['args'], ensure_ascii=False)})")
        lines.append(f"observation_{i}: {step['observation']}")
    return "\n".join(lines)


class PersonaAgent(dspy.Module):
    """A personalized agent for one user.

    Args:
        signature: the task (default: free-form request -> response); its docstring is the task instruction.
        user_id: whose agent this is; every tool is bound to this user.
        store: the user's memory (episodic + profile); without it there are no memory tools.
        persona: the user's persona (a `Persona` or its text); None gives a generic, non-personal instruction.
        tools: which tools to offer, among `ALL_TOOLS` (those the store/knowledge/update settings allow).
        knowledge: a shared knowledge base for `search_knowledge`.
        max_iters: most tool calls before answering.
        use_actions: False answers directly, with no tool loop (the paper's "without action" ablation).
        allow_updates: offer `update_memory` (writes to the store); turn off for evaluation.
        task: restrict memory search to rows of this task.
        mode: `react` (the tool loop), `planned` (memory read in code, its nearest items as demos, one answer
            call; see `persona_agent.programs.planned`) or `auto` (planned for the local model, else ReAct),
            resolved at each call from the LM in use and reported as `mode` on the prediction.
        k: past interactions given as demos in planned mode.
        evidence_weights: per-user weights of the model's, the neighbours' and the user's label evidence
            (planned mode, closed label sets); a compile fits them, the state saves them. By default
            `default_weights` of the signature's labels (the model times the user's prior for categories).
        clip_words: planned mode cuts each demo and the request to this many words for a closed-set answer.
    """

    def __init__(
        self,
        signature: type[dspy.Signature] | str = PersonalizedRequest,
        *,
        user_id: str,
        store: MemoryStore | None = None,
        persona: Persona | str | None = None,
        tools: Sequence[str] = ALL_TOOLS,
        knowledge: KnowledgeBase | None = None,
        max_iters: int = 3,
        use_actions: bool = True,
        allow_updates: bool = True,
        task: str | None = None,
        mode: Mode = "auto",
        k: int = 5,
        evidence_weights: EvidenceWeights | None = None,
        clip_words: int | None = 80,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise InvalidInputError("mode", mode, f"choose from {list(MODES)}")
        if k != 0:
            validate_k(k, "k")
        self.mode = mode
        self.k = k
        self.clip_words = clip_words
        self.task_signature = ensure_signature(signature)
        self.evidence_weights = evidence_weights or default_weights(labels_of(self.task_signature))
        self.user_id = validate_user_id(user_id)
        validate_k(max_iters, "max_iters")
        self.store = store
        self.knowledge = knowledge
        self.max_iters = max_iters
        self.use_actions = use_actions
        self.allow_updates = allow_updates
        self.task = task
        offered = make_tools(self._context(None), tools)
        self.tool_names = tuple(t.name for t in offered) if use_actions else ()
        self._protocol = tool_protocol(offered) if self.tool_names else None
        task_fields = {**self.task_signature.input_fields}
        names = Literal[(*self.tool_names, FINISH)]  # type: ignore[valid-type]
        self.react = dspy.Predict(
            dspy.Signature(task_fields, "")
            .append("trajectory", dspy.InputField(desc="earlier tool calls and observations"), type_=str)
            .append("next_thought", dspy.OutputField(desc="what to find out next, and why"), type_=str)
            .append("next_tool_name", dspy.OutputField(desc="the tool to call, or finish"), type_=names)
            .append(
                "next_tool_args", dspy.OutputField(desc="the tool's arguments as a JSON object"), type_=dict[str, Any]
            )
        )
        self.respond = dspy.Predict(
            dspy.Signature({**task_fields, **self.task_signature.output_fields}, "").append(
                "trajectory", dspy.InputField(desc="tool calls and observations gathered for this request"), type_=str
            )
        )
        self.answer = dspy.Predict(dspy.Signature({**task_fields, **self.task_signature.output_fields}, ""))
        self._persona: Persona | None = None
        self._set_persona(self._coerce(persona))

    # -- persona ------------------------------------------------------------------------------------

    def _coerce(self, persona: Persona | str | None) -> Persona | None:
        if persona is None or isinstance(persona, Persona):
            if persona is not None and persona.user_id != self.user_id:
                raise InvalidInputError("persona.user_id", persona.user_id, f"this agent is for {self.user_id!r}")
            return persona
        if isinstance(persona, str):
            return Persona(user_id=self.user_id, text=persona, source="manual")
        raise InvalidInputError("persona", persona, "must be a Persona, its text, or None")

    def _set_persona(self, persona: Persona | None) -> None:
        """Replace each predictor's signature (never mutate it: signature classes are shared by copies)."""
        head = persona.text if persona is not None else GENERIC_INSTRUCTIONS
        task_doc = self.task_signature.instructions
        self.react.signature = self.react.signature.with_instructions(
            compose_instructions(head, task_doc, self._protocol)
        )
        self.respond.signature = self.respond.signature.with_instructions(compose_instructions(head, task_doc))
        self.answer.signature = self.answer.signature.with_instructions(compose_instructions(head, task_doc))
        self._persona = persona

    @property
    def persona(self) -> Persona | None:
        """The persona heading every predictor's instructions (None: the generic instruction)."""
        return self._persona

    def with_persona(self, persona: Persona | str | None) -> PersonaAgent:
        """A copy of this agent steered by `persona`; this agent is left untouched."""
        return self.rebind(self.user_id, persona)

    def rebind(self, user_id: str, persona: Persona | str | None = None) -> PersonaAgent:
        """A copy for `user_id` steered by `persona`, sharing this agent's structure (signatures, tools, demos,
        store). Much cheaper than building a new agent, whose signature classes cost milliseconds each: loading
        a saved program copies a template this way. This agent is left untouched."""
        agent = self.deepcopy()
        agent.user_id = validate_user_id(user_id)
        agent._set_persona(agent._coerce(persona))
        return agent

    # -- saving -------------------------------------------------------------------------------------

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        state = super().dump_state(json_mode=json_mode)
        state[STATE_KEY] = {
            "user_id": self.user_id,
            "persona": self._persona.to_dict() if self._persona is not None else None,
            "mode": self.mode,
            "evidence_weights": self.evidence_weights.to_dict(),
        }
        return state

    def load_state(self, state: dict[str, Any], *, allow_unsafe_lm_state: bool = False) -> PersonaAgent:
        meta = state.get(STATE_KEY)
        if not isinstance(meta, dict):
            raise InvalidInputError("state", sorted(state), f"is not a saved PersonaAgent (no {STATE_KEY!r} entry)")
        if meta.get("user_id") != self.user_id:
            raise InvalidInputError("state.user_id", meta.get("user_id"), f"this agent is for {self.user_id!r}")
        persona = Persona.from_dict(meta["persona"]) if meta.get("persona") is not None else None
        mode = meta.get("mode", self.mode)
        if mode not in MODES:
            raise InvalidInputError("state.mode", mode, f"choose from {list(MODES)}")
        weights = EvidenceWeights.from_dict(meta["evidence_weights"]) if meta.get("evidence_weights") else None
        params = {k: v for k, v in state.items() if k != STATE_KEY}
        params.setdefault("answer", self.answer.dump_state())  # saved before planned mode existed
        super().load_state(params, allow_unsafe_lm_state=allow_unsafe_lm_state)
        self._set_persona(persona)
        self.mode = mode
        self.evidence_weights = weights or self.evidence_weights
        return self

    def with_evidence_weights(self, weights: EvidenceWeights) -> PersonaAgent:
        """A copy answering under `weights`; this agent is left untouched."""
        agent = self.deepcopy()
        agent.evidence_weights = weights
        return agent

    # -- running ------------------------------------------------------------------------------------

    def _context(self, as_of: datetime | float | None) -> ToolContext:
        return ToolContext(
            user_id=self.user_id,
            store=self.store,
            knowledge=self.knowledge,
            before=None if as_of is None else to_utc_naive(as_of, "as_of"),
            task=self.task,
            allow_updates=self.allow_updates,
        )

    def _steps(self, inputs: dict[str, Any], as_of: datetime | float | None) -> Steps:
        missing = set(self.task_signature.input_fields) - set(inputs)
        if missing:
            raise InvalidInputError("inputs", sorted(inputs), f"missing input fields {sorted(missing)}")
        context = self._context(as_of)
        if resolve_mode(self.mode, dspy.settings.lm) == "planned":
            return (yield from planned_steps(self, inputs, context.before))
        tools: dict[str, dspy.Tool] = {}  # built on first use: a dspy.Tool costs ~1 ms, most answers use few
        trajectory: list[dict[str, Any]] = []
        for _ in range(self.max_iters if self.tool_names else 0):
            try:
                step = yield Predict(self.react, {**inputs, "trajectory": format_trajectory(trajectory)})
            except (AdapterParseError, ValueError) as exc:
                # One bad step from the LM ends the loop; the answer is still given (GEPA's policy:
                # an example's failure is not a systemic error).
                logger.warning("ending the tool loop: the LM gave no valid step (%s)", error_excerpt(exc))
                break
            name, args = step.next_tool_name, dict(step.next_tool_args or {})
            if name == FINISH:
                break
            try:
                if name not in tools and name in self.tool_names:
                    tools.update((t.name, t) for t in make_tools(context, [name]))
                observation = yield UseTool(tools[name], args)
            except Exception as exc:  # a tool failure is an observation, never a crash
                observation = f"error in {name}: {type(exc).__name__}: {exc}"
            trajectory.append({"thought": step.next_thought, "tool": name, "args": args, "observation": observation})
        answer = yield Predict(self.respond, {**inputs, "trajectory": format_trajectory(trajectory)})
        outputs = {name: answer[name] for name in self.task_signature.output_fields}
        return dspy.Prediction(**outputs, trajectory=trajectory, mode="react")

    def forward(self, as_of: datetime | float | None = None, **inputs: Any) -> dspy.Prediction:
        """Answer one request. `as_of` is a strict time cut-off for memory reads (evaluation sets it)."""
        return run_sync(self._steps(inputs, as_of))

    async def aforward(self, as_of: datetime | float | None = None, **inputs: Any) -> dspy.Prediction:
        return await run_async(self._steps(inputs, as_of))
