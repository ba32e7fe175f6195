"""One llama.cpp model per process, loaded on first use and shared by every engine that asks for it.

xllamacpp runs llama.cpp's server in-process. It always opens an HTTP listener on 127.0.0.1 even though
we call it directly; we give it a random API key so nothing else on the machine can use that port.

Concurrent callers (the service, a compile fan-out's threads, alignment's simulations) share the one model
through `slots` llama.cpp slots (setting `local_slots`): the server batches the slots' requests in one
context, and each slot keeps its own KV cache between calls, so prefix reuse works per slot (the server gives
a request the slot whose cached prompt shares the most with it; the persona and instructions repeat in every
call of a compile). A semaphore admits at most `slots` requests at once; more wait their turn. Each slot gets
the full `n_ctx` (the context is sized `n_ctx * slots`). Never load a second model process per worker: two
llama.cpp processes on the same cores thrash.
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_agent.core.errors import InvalidInputError, LocalRuntimeMissingError


@dataclass(frozen=True)
class RuntimeOptions:
    """Load-time options of the llama.cpp context (a model is loaded once per distinct set)."""

    n_ctx: int = 8192
    n_threads: int | None = None  # None: every core this process may use
    prompt_cache_mib: int = 1024  # host-RAM cache of evicted prompt prefixes
    slots: int = 1  # requests served at once, each slot with its own KV cache (setting `local_slots`)

    def __post_init__(self) -> None:
        if not 1 <= self.slots <= 16:
            raise InvalidInputError("slots", self.slots, "must be between 1 and 16")


def _import_xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalRuntimeMissingError(
            'the in-process model needs the `local` extra: pip install "dspy-persona[local]"'
        ) from exc
    return xllamacpp


class LlamaRuntime:
    """A loaded model: the xllamacpp server object and the semaphore that admits `slots` requests at once."""

    def __init__(self, model_path: Path, options: RuntimeOptions) -> None:
        xllamacpp = _import_xllamacpp()
        threads = options.n_threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_ctx = options.n_ctx * options.slots  # llama.cpp splits the context between the slots
        params.n_parallel = options.slots  # each slot's KV cache carries its shared prefix from call to call
        params.cache_prompt = True
        params.cache_ram_mib = options.prompt_cache_mib
        params.cpuparams.n_threads = threads or -1
        params.cpuparams_batch.n_threads = threads or -1
        params.warmup = False
        params.verbosity = -1
        params.log_json = False
        params.n_threads_http = 1
        params.api_keys = [secrets.token_urlsafe(32)]
        params.endpoint_props = False
        params.endpoint_slots = False
        params.endpoint_metrics = False
        self.model_path = model_path
        self.options = options
        self._slots = threading.BoundedSemaphore(options.slots)
        self._server = xllamacpp.Server(params)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One OpenAI-shaped chat completion; beyond `slots` concurrent callers, callers queue."""
        with self._slots:
            return self._server.handle_chat_completions(body)


_RUNTIMES: dict[tuple[Path, RuntimeOptions], LlamaRuntime] = {}
_RUNTIMES_LOCK = threading.Lock()


def get_runtime(model_path: Path, options: RuntimeOptions) -> LlamaRuntime:
    """The process's runtime for this model and options, loading it on first use (~2-5 s, ~2 GB RAM)."""
    key = (model_path.resolve(), options)
    with _RUNTIMES_LOCK:
        runtime = _RUNTIMES.get(key)
        if runtime is None:
            runtime = LlamaRuntime(key[0], options)
            _RUNTIMES[key] = runtime
        return runtime


def unload_all() -> None:
    """Drop every loaded model (tests and benchmarks use this to measure a cold start)."""
    with _RUNTIMES_LOCK:
        _RUNTIMES.clear()
