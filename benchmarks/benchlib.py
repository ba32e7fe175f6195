"""What the benchmark scripts share: the machine a run was on and how its JSON report is written.

The scripts import it by file name (`from benchlib import ...`), as they import `lean_adapter`: they are
scripts run from this folder, not a package.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine(**extra: Any) -> dict[str, Any]:
    """The CPU count and Python version of this run, then `extra` (library versions, load average) in order."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), **extra}


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write `report` as indented JSON with a final newline, creating the results folder if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
