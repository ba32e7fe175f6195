"""The `persona-agent` command line, for scripts: every command exits 0 when it did its work, 2 on bad input
(with a message naming what is wrong, and nothing written), 1 on any other failure.

Settings come from the environment (`PERSONA_AGENT_*`, see `persona_agent/core/config.py`); `--lm` overrides the
LM for one command. `app` is the console script's entry point; each sibling module adds its commands to it:
`demo`, `memory` (ingest, profile), `compile_commands` (compile, ask), `personas`, `admin` (forget, serve, token).
"""

from __future__ import annotations

from persona_agent.cli.common import app, console, err, open_workspace

# Imported for their commands, which they register on `app` (the order is `--help`'s order).
from persona_agent.cli import demo, memory, compile_commands, personas, admin  # noqa: F401  isort: skip

__all__ = ["app", "console", "err", "open_workspace"]
