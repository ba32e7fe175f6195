"""LM settings parsed, and the in-process model's file resolved, with no engine in sight.

The llama.cpp engine rebuilds itself from a saved `model_ref` through `model_resolver`, and `models.make_lm`
builds engines with it, so both import this module and neither imports the other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError
from persona_agent.lm.gguf import ensure_default_model, read_gguf_header

LOCAL_MODEL_NAME = "local/qwen2.5-coder-1.5b-instruct-q4_k_m"
_LITELLM_SPEC = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/\S+$")
SpecKind = Literal["local", "gguf", "litellm"]


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


def model_resolver(model_ref: str, settings: Settings | None = None) -> Callable[[], Path]:
    """A function giving the GGUF file of 'local' or 'gguf:/path' (checked now, assembled on first call)."""
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
    return resolve
