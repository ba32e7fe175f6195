"""Shared by the notebook tests: a kernel that runs this interpreter, and a migrated MLflow database."""

from __future__ import annotations

import pytest

from tests.support import mlflow_template

__all__ = ["mlflow_template"]

KERNEL = "persona-agent-tests"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec that runs this interpreter (not whichever `python` comes first on PATH)."""
    from ipykernel.kernelspec import write_kernel_spec

    write_kernel_spec(tmp_path / "jupyter" / "kernels" / KERNEL)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL
