"""What the benchmark scripts share: the machine a run was on, how its JSON report is written, the data folder.

The scripts import it by file name (`from benchlib import ...`), as they import `lean_adapter`: they are
scripts run from this folder, not a package.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from persona_agent.core.config import Settings


def machine(**extra: Any) -> dict[str, Any]:
    """The CPU count and Python version of this run, then `extra` (library versions, load average) in order."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), **extra}


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write `report` as indented JSON with a final newline, creating the results folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def data_folder(given: Path | None) -> Path:
    """The real-data folder: `--data`, else the `PERSONA_AGENT_DATA_DIR` setting. There is no default, since the
    data is not in the repository; the scripts that need it say so before any work."""
    folder = given or Settings().data_dir
    if folder is None:
        raise SystemExit("no data folder: pass --data DIR or set PERSONA_AGENT_DATA_DIR")
    return Path(folder)
