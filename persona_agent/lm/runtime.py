"""One llama.cpp model per process, loaded on first use and shared by every engine that asks for it.

xllamacpp runs llama.cpp's server in-process. It always opens an HTTP listener on 127.0.0.1 even though
we call it directly; we give it a random API key so nothing else on the machine can use that port.
Generation is serialized behind a lock: a llama.cpp context is not thread-safe, and one slot that keeps
its KV cache between calls is what makes prefix reuse work (the persona and instructions repeat in
every call of a compile).
"""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from persona_agent.core.errors import LocalRuntimeMissingError


@dataclass(frozen=True)
class RuntimeOptions:
    """Load-time options of the llama.cpp context (a model is loaded once per distinct set)."""

    n_ctx: int = 8192
    n_threads: int | None = None  # None: every core this process may use
    prompt_cache_mib: int = 1024  # host-RAM cache of evicted prompt prefixes


def _import_xllamacpp() -> Any:
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalRuntimeMissingError(
            'the in-process model needs the `local` extra: pip install "dspy-persona[local]"'
        ) from exc
    return xllamacpp


class LlamaRuntime:
    """A loaded model: the xllamacpp server object and the lock that serializes generation."""

    def __init__(self, model_path: Path, options: RuntimeOptions) -> None:
        xllamacpp = _import_xllamacpp()
        threads = options.n_threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
        params = xllamacpp.CommonParams()
        params.model.path = str(model_path)
        params.n_ctx = options.n_ctx
        params.n_parallel = 1  # one slot: its KV cache carries the shared prefix from call to call
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
        self._lock = threading.Lock()
        self._server = xllamacpp.Server(params)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """One OpenAI-shaped chat completion; callers queue on the lock."""
        with self._lock:
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
