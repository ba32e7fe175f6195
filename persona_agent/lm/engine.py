"""DSPy 3.4 custom engines (`dspy.LM(..., engine=..., async_engine=...)`) over the in-process model.

An engine turns one canonical `dspy.lm15.Request` into one `Response`; DSPy keeps caching, retries,
history and callbacks. The blocking llama.cpp call is the single core: the async engine runs it in a
worker thread, so the event loop stays free while the model works; concurrent calls share the model's
slots (`RuntimeOptions.slots`, see `persona_agent.lm.runtime`).

Structured output: DSPy sends `response_format = {"type": "json_schema", "schema": ..., "name": ...}`
(schema at the top level); llama.cpp reads `{"type": "json_schema", "json_schema": {"name", "schema"}}`
and silently ignores the other shape, so we convert it and decoding is constrained by a grammar.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from dspy.clients.engines.base import validate_request
from dspy.lm15 import (
    ContextLengthError,
    InvalidRequestError,
    Message,
    Request,
    Response,
    ServerError,
    TextPart,
    TokenLogprob,
    TopLogprob,
    UnsupportedFeatureError,
    Usage,
    response_to_events,
)

from persona_agent.lm.runtime import LlamaRuntime, RuntimeOptions, get_runtime
from persona_agent.lm.specs import model_resolver

PROVIDER = "llama.cpp"
_FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_call", "content_filter": "content_filter"}


def llama_response_format(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """DSPy's canonical response_format in the shape llama.cpp's server honours."""
    if response_format is None:
        return None
    if response_format.get("type") == "json_schema":
        schema = response_format["schema"]
        return {
            "type": "json_schema",
            "json_schema": {"name": response_format.get("name", "response"), "schema": schema},
        }
    return {"type": "json_object"}


def _text(message: Message) -> str:
    text = message.text
    if text is None:
        kinds = sorted({part.type for part in message.parts})
        raise UnsupportedFeatureError(f"the local model takes text messages only, got parts {kinds}", provider=PROVIDER)
    return text


def chat_body(request: Request, *, seed: int, max_tokens: int, cache_prompt: bool) -> dict[str, Any]:
    """The llama.cpp chat-completions body for a canonical request (temperature 0 unless asked)."""
    if request.tools:
        raise UnsupportedFeatureError(
            "the local model has no native tool calling; use DSPy's text tools", provider=PROVIDER
        )
    config = request.config
    messages: list[dict[str, str]] = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": _text(m)} for m in request.messages)
    body: dict[str, Any] = {
        "messages": messages,
        "temperature": config.temperature if config.temperature is not None else 0.0,
        "max_tokens": config.max_tokens or max_tokens,
        "seed": config.seed if config.seed is not None else seed,
        "cache_prompt": cache_prompt,
    }
    optional = {
        "top_p": config.top_p,
        "top_k": config.top_k,
        "frequency_penalty": config.frequency_penalty,
        "presence_penalty": config.presence_penalty,
        "stop": list(config.stop) or None,
        "response_format": llama_response_format(config.response_format),
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if config.logprobs is not None:  # 0: the chosen tokens' log-probabilities; n: also the top n alternatives
        body["logprobs"] = True
        if config.logprobs > 0:
            body["top_logprobs"] = config.logprobs
    return body


def _logprobs(choice: dict[str, Any]) -> tuple[TokenLogprob, ...] | None:
    """llama.cpp's OpenAI-shaped `logprobs.content` as lm15 token log-probabilities (None when not asked)."""
    content = (choice.get("logprobs") or {}).get("content")
    if content is None:
        return None

    def extra(entry: dict[str, Any]) -> dict[str, Any]:
        raw = entry.get("bytes")
        return {"bytes": tuple(raw) if raw is not None else None, "token_id": entry.get("id")}

    return tuple(
        TokenLogprob(
            token=entry["token"],
            logprob=float(entry["logprob"]),
            top=tuple(
                TopLogprob(token=alt["token"], logprob=float(alt["logprob"]), **extra(alt))
                for alt in entry.get("top_logprobs") or ()
            ),
            **extra(entry),
        )
        for entry in content
    )


def to_response(raw: dict[str, Any], model: str) -> Response:
    """A canonical Response from llama.cpp's reply; server errors become lm15 errors DSPy understands."""
    error = raw.get("error") if isinstance(raw.get("error"), dict) else raw if "choices" not in raw else None
    if error is not None:
        message = str(error.get("message", error))
        status = error.get("code") if isinstance(error.get("code"), int) else None
        if "context" in message and ("exceed" in message or "too long" in message):
            raise ContextLengthError(message, provider=PROVIDER, status=status)
        if status is not None and 400 <= status < 500:
            raise InvalidRequestError(message, provider=PROVIDER, status=status)
        raise ServerError(message, provider=PROVIDER, status=status)
    choice = raw["choices"][0]
    content = choice.get("message", {}).get("content") or ""
    usage = raw.get("usage", {})
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    timings = raw.get("timings") or {}
    return Response(
        id=raw.get("id") or None,
        model=model,
        message=Message.assistant([TextPart(content)]),
        finish_reason=_FINISH.get(choice.get("finish_reason") or "stop", "stop"),
        usage=Usage(
            input_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
            cache_read_tokens=cached,
        ),
        logprobs=_logprobs(choice),
        provider_data={"timings": {k: v for k, v in timings.items() if isinstance(v, int | float)}}
        if timings
        else None,
    )


class LlamaEngine:
    """Synchronous engine over the process's shared llama.cpp model.

    `model_ref` is the spec the model came from ('local' or 'gguf:/path'), kept instead of a resolved
    path so a saved program loads on another machine; `resolve` turns it into a file on first call.
    """

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset(
        {"temperature", "max_tokens", "top_p", "top_k", "stop", "seed", "frequency_penalty", "presence_penalty"}
        | {"response_format", "logprobs"}
    )

    def __init__(
        self,
        model_ref: str,
        resolve: Callable[[], Path],
        *,
        options: RuntimeOptions | None = None,
        seed: int = 0,
        max_tokens: int = 1024,
        cache_prompt: bool = True,
    ) -> None:
        self.model_ref = model_ref
        self.options = options or RuntimeOptions()
        self.seed = seed
        self.max_tokens = max_tokens
        self.cache_prompt = cache_prompt
        self._resolve = resolve

    def runtime(self) -> LlamaRuntime:
        """The loaded model (assembling and loading it on first use)."""
        return get_runtime(self._resolve(), self.options)

    def complete(self, request: Request) -> Response:
        validate_request(request)
        body = chat_body(request, seed=self.seed, max_tokens=self.max_tokens, cache_prompt=self.cache_prompt)
        return to_response(self.runtime().chat(body), request.model)

    def stream(self, request: Request) -> Iterator[Any]:
        return response_to_events(self.complete(request))

    def close(self) -> None:
        """The model is shared by the process; nothing per-engine to release."""

    def with_options(self, **changes: Any) -> LlamaEngine:
        """A copy with other seed, max_tokens or cache_prompt (same loaded model)."""
        kwargs = {"options": self.options, "seed": self.seed, "max_tokens": self.max_tokens}
        kwargs["cache_prompt"] = self.cache_prompt
        kwargs.update(changes)
        return type(self)(self.model_ref, self._resolve, **kwargs)

    def dump_state(self) -> dict[str, Any]:
        """Reconstruction state; holds no secret (the listener's API key is new in every process)."""
        return {
            "model_ref": self.model_ref,
            "n_ctx": self.options.n_ctx,
            "n_threads": self.options.n_threads,
            "slots": self.options.slots,
            "seed": self.seed,
            "max_tokens": self.max_tokens,
            "cache_prompt": self.cache_prompt,
        }

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> LlamaEngine:
        return cls(
            state["model_ref"],
            model_resolver(state["model_ref"]),
            options=RuntimeOptions(
                n_ctx=state.get("n_ctx", 8192), n_threads=state.get("n_threads"), slots=state.get("slots", 1)
            ),
            seed=state.get("seed", 0),
            max_tokens=state.get("max_tokens", 1024),
            cache_prompt=state.get("cache_prompt", True),
        )


class AsyncLlamaEngine:
    """Async counterpart: the same blocking call in a worker thread, so `acall` and the event loop work."""

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = LlamaEngine.supported_params

    def __init__(self, sync: LlamaEngine) -> None:
        self.sync = sync

    async def complete(self, request: Request) -> Response:
        return await asyncio.to_thread(self.sync.complete, request)

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        for event in response_to_events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        """Nothing to release; see `LlamaEngine.close`."""

    def dump_state(self) -> dict[str, Any]:
        return self.sync.dump_state()

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> AsyncLlamaEngine:
        return cls(LlamaEngine.load_state(state))
