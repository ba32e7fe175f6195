"""The repository passes its own linter and formatter as configured in pyproject.toml: the banned bare imports
(`signatures`, `stores`, ... outside the `persona_agent` namespace) and the rest of the lint rules hold only if a
test run checks them, since CI runs the tests and nothing else."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes_on_the_repository(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "--no-cache", str(ROOT)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
