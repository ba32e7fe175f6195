"""PersonaAgent: personalized LLM agents as DSPy-compiled prompt programs.

The names below are imported on first access, so `import persona_agent` stays fast and has no side effects.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "load_program": "persona_agent.loading",
    "default_workspace": "persona_agent.loading",
    "close_default_workspaces": "persona_agent.loading",
    "Workspace": "persona_agent.workspace",
    "Settings": "persona_agent.core.config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'persona_agent' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)
