"""A scripted LM for deterministic tests, shipped in the package so every module's tests can use it.

Answers are scripted per signature and returned in the output format the adapter asked for
(`ChatAdapter`'s `[[ ## field ## ]]` sections or `JSONAdapter`'s JSON object), with usage figures,
through DSPy's real LM path (a custom engine), so callbacks, history, caching and usage accounting
behave as with a real model.

A script maps a key to answers:
- key: a `dspy.Signature` class, a spec string such as ``"question -> answer"``, a signature class
  name, or ``"*"`` for anything else. A key matches a call when their input fields are the same and the
  key's outputs are among the call's (so ``QA`` also matches ``ChainOfThought(QA)``, whose extra
  ``reasoning`` is filled in). Instructions are ignored: a persona rewrites them. Names are a weak key:
  DSPy renames derived signatures (``with_instructions``, ``ChainOfThought``) to ``StringSignature``.
  ReAct's two predictors are ``"question, trajectory -> next_thought, next_tool_name, next_tool_args"``
  and ``"question, trajectory -> answer"`` (with your input and output fields).
- answers: one mapping (returned every time), a list of mappings (consumed in order; running out
  raises `ScriptExhaustedError`), or a callable ``(ScriptedCall) -> mapping`` for answers that depend
  on the inputs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.adapters.chat_adapter import FieldInfoWithName
from dspy.clients.engines.base import validate_request
from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events
from dspy.signatures.field import OutputField

from persona_agent.core.errors import PersonaAgentError

Answer = Mapping[str, Any]
Answers = Answer | Sequence[Answer] | Callable[["ScriptedCall"], Answer]
Script = Mapping[Any, Answers]

_FIELD_LINE = re.compile(r"^\d+\. `(\w+)`", re.MULTILINE)
FILLER = "(scripted)"


class ScriptError(PersonaAgentError, LookupError):
    """No scripted answer fits this call; the message names the call's signature and the script's keys."""


class ScriptExhaustedError(ScriptError):
    """A list of scripted answers was used up."""


@dataclass(frozen=True)
class ScriptedCall:
    """What the scripted LM saw: the signature's fields, the parsed inputs and the raw messages."""

    index: int  # position among all calls of this LM
    input_fields: tuple[str, ...]
    output_fields: tuple[str, ...]
    inputs: dict[str, str]  # values of the final request's input fields, as the adapter rendered them
    messages: tuple[dict[str, str], ...]
    json_mode: bool
    signature: type[dspy.Signature] | None = None  # the calling Predict's signature, when DSPy exposes it
    plain: bool = False  # plain chat turns (`ChoiceAdapter`): the reply is the bare output value

    @property
    def spec(self) -> str:
        return f"{', '.join(self.input_fields)} -> {', '.join(self.output_fields)}"


@dataclass
class _Entry:
    key: Any
    inputs: tuple[str, ...] | None
    outputs: tuple[str, ...] | None
    name: str | None
    answers: Answers
    position: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _fields_of_key(key: Any) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None, str | None]:
    if isinstance(key, type) and issubclass(key, dspy.Signature):
        return tuple(key.input_fields), tuple(key.output_fields), key.__name__
    if isinstance(key, str) and "->" in key:
        left, right = key.split("->", 1)
        split = lambda side: tuple(name.strip() for name in side.split(",") if name.strip())  # noqa: E731
        return split(left), split(right), None
    if isinstance(key, str):
        return None, None, key
    raise TypeError(f"a script key is a dspy.Signature class or a string, got {key!r}")


def _section(text: str, title: str) -> tuple[str, ...]:
    start = text.find(title)
    if start < 0:
        return ()
    block = text[start + len(title) :]
    block = block.split("Your output fields are:", 1)[0] if "input" in title else block
    block = block.split("All interactions will be structured", 1)[0]
    return tuple(_FIELD_LINE.findall(block))


def _parse_inputs(content: str, names: Sequence[str]) -> dict[str, str]:
    """Input values from the final user message; only the signature's own headers split it (a ReAct
    trajectory holds `[[ ## thought_0 ## ]]`-style headers of its own)."""
    if not names:
        return {}
    header = re.compile(r"\[\[ ## (" + "|".join(map(re.escape, names)) + r") ## \]\]\n?")
    pieces = header.split(content)  # [before, name1, body1, name2, body2, ...]
    values = {}
    for name, body in zip(pieces[1::2], pieces[2::2], strict=True):
        values[name] = re.split(r"\n\nRespond with ", body, maxsplit=1)[0].strip()
    return values


def _parse_plain(content: str, names: Sequence[str]) -> dict[str, str]:
    """Input values from a plain user turn: the whole text for one field, else its `name: value` lines."""
    if len(names) == 1:
        return {names[0]: content.strip()}
    pairs = (line.split(": ", 1) for line in content.splitlines() if ": " in line)
    return {name: value.strip() for name, value in pairs if name in names}


def _caller_signature() -> type[dspy.Signature] | None:
    modules = dspy.settings.get("caller_modules") or []
    if modules and isinstance(modules[-1], dspy.Predict):
        return modules[-1].signature
    return None


def _tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


class ScriptedEngine:
    """The custom engine behind `ScriptedLM` (sync; `AsyncScriptedEngine` awaits it)."""

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset({"temperature", "max_tokens", "response_format"})

    def __init__(self, script: Script | Sequence[Answer] | Callable[[ScriptedCall], Answer] | None) -> None:
        if script is None:
            script = {}
        if callable(script) or (isinstance(script, Sequence) and not isinstance(script, str)):
            script = {"*": script}
        if not isinstance(script, Mapping):
            raise TypeError("script must be a mapping of key -> answers, a list of answers or a callable")
        self.entries = [_Entry(key, *_fields_of_key(key), answers) for key, answers in script.items()]
        self.calls: list[ScriptedCall] = []
        self._counter = itertools.count()
        self._lock = threading.Lock()

    # -- matching -------------------------------------------------------------------------------
    def _describe(self, request: Request) -> ScriptedCall:
        messages: list[dict[str, str]] = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
        signature = _caller_signature()
        system_text = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        if signature is not None:
            inputs, outputs = tuple(signature.input_fields), tuple(signature.output_fields)
        else:
            inputs = _section(system_text, "Your input fields are:")
            outputs = _section(system_text, "Your output fields are:")
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        json_mode = request.config.response_format is not None or "Outputs will be a JSON object" in system_text
        # a JSON request without DSPy's markers (e.g. a lean JSON adapter) still gets JSON, not a bare value
        plain = signature is not None and not json_mode and "[[ ## " not in system_text and "[[ ## " not in user
        values = _parse_plain(user, inputs) if plain else _parse_inputs(user, inputs)
        with self._lock:
            index = next(self._counter)
        return ScriptedCall(index, inputs, outputs, values, tuple(messages), json_mode, signature, plain)

    def _match(self, call: ScriptedCall) -> _Entry:
        best, best_score = None, 0
        name = call.signature.__name__ if call.signature is not None else None
        for entry in self.entries:
            score = 0
            if entry.inputs is not None and entry.outputs is not None:
                if set(entry.inputs) == set(call.input_fields) and set(entry.outputs) <= set(call.output_fields):
                    score = 3 if set(entry.outputs) == set(call.output_fields) else 2
            elif entry.name == "*":
                score = 1
            elif entry.name is not None and entry.name == name:
                score = 3
            if score > best_score:
                best, best_score = entry, score
        if best is None:
            keys = [str(e.key.__name__ if isinstance(e.key, type) else e.key) for e in self.entries]
            raise ScriptError(f"no scripted answer for `{call.spec}` (signature {name!r}); script keys: {keys}")
        return best

    def _answer(self, entry: _Entry, call: ScriptedCall) -> dict[str, Any]:
        answers = entry.answers
        if callable(answers):
            answer = answers(call)
        elif isinstance(answers, Mapping):
            answer = answers
        else:
            with entry.lock:
                if entry.position >= len(answers):
                    raise ScriptExhaustedError(
                        f"the {len(answers)} scripted answers for {call.spec!r} are used up (call #{call.index})"
                    )
                answer = answers[entry.position]
                entry.position += 1
        if not isinstance(answer, Mapping):
            raise TypeError(f"a scripted answer is a mapping of output field -> value, got {answer!r}")
        return dict(answer)

    def _render(self, call: ScriptedCall, answer: dict[str, Any]) -> str:
        unknown = set(answer) - set(call.output_fields) if call.output_fields else set()
        if unknown:
            raise ScriptError(f"scripted answer has fields {sorted(unknown)} that `{call.spec}` does not output")
        ordered = {name: answer.get(name, FILLER) for name in call.output_fields} if call.output_fields else answer
        if call.plain:
            return "\n".join(str(value) for value in ordered.values())
        if call.json_mode:
            return json.dumps(ordered, ensure_ascii=False, default=str)
        fields = {FieldInfoWithName(name=name, info=OutputField()): value for name, value in ordered.items()}
        return dspy.ChatAdapter().format_field_with_value(fields) + "\n\n[[ ## completed ## ]]"

    # -- engine contract --------------------------------------------------------------------------
    def complete(self, request: Request) -> Response:
        validate_request(request)
        call = self._describe(request)
        text = self._render(call, self._answer(self._match(call), call))
        with self._lock:
            self.calls.append(call)
        prompt = "".join(m["content"] for m in call.messages)
        return Response(
            id=f"scripted-{call.index}",
            model=request.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=_tokens(prompt), output_tokens=_tokens(text)),
        )

    def stream(self, request: Request) -> Iterator[Any]:
        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to release."""

    def dump_state(self) -> dict[str, Any]:
        """Scripts (callables) are not saved; a loaded scripted LM answers nothing until re-scripted."""
        return {}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> ScriptedEngine:
        return cls(None)


class AsyncScriptedEngine:
    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = ScriptedEngine.supported_params

    def __init__(self, sync: ScriptedEngine) -> None:
        self.sync = sync

    async def complete(self, request: Request) -> Response:
        await asyncio.sleep(0)  # yield like a real backend would
        return self.sync.complete(request)

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        """Nothing to release."""

    def dump_state(self) -> dict[str, Any]:
        return {}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> AsyncScriptedEngine:
        return cls(ScriptedEngine(None))


class ScriptedLM(dspy.LM):
    """A `dspy.LM` that answers from a script (see the module docstring), deterministic and offline.

    >>> lm = ScriptedLM({"question -> answer": {"answer": "Paris"}})
    >>> with dspy.context(lm=lm):
    ...     dspy.Predict("question -> answer")(question="Capital of France?").answer
    'Paris'

    `calls` lists every call seen. DSPy's response cache is off unless `cache=True`, so a repeated call
    takes the next scripted answer.
    """

    def __init__(
        self,
        script: Script | Sequence[Answer] | Callable[[ScriptedCall], Answer] | None = None,
        *,
        model: str = "scripted/lm",
        cache: bool = False,
        **kwargs: Any,
    ) -> None:
        engine = ScriptedEngine(script)
        super().__init__(
            model, engine=engine, async_engine=AsyncScriptedEngine(engine), cache=cache, num_retries=0, **kwargs
        )

    @property
    def calls(self) -> list[ScriptedCall]:
        return self.engine.calls


__all__ = ["FILLER", "ScriptError", "ScriptExhaustedError", "ScriptedCall", "ScriptedEngine", "ScriptedLM"]
