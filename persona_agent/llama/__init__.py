"""The offline in-process model: GGUF assembly from PyPI parts and a llama.cpp engine for `dspy.LM`.

Everything here is imported lazily by `persona_agent.lm`; importing this package loads neither
llama.cpp nor the model.
"""

from persona_agent.llama.engine import AsyncLlamaEngine, LlamaEngine
from persona_agent.llama.gguf import DEFAULT_MODEL, GGUFHeader, ModelPin, ensure_default_model, read_gguf_header

__all__ = [
    "DEFAULT_MODEL",
    "AsyncLlamaEngine",
    "GGUFHeader",
    "LlamaEngine",
    "ModelPin",
    "ensure_default_model",
    "read_gguf_header",
]
