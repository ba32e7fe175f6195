"""Fixtures of the workspace, CLI and service tests (see tests/support.py)."""

from tests.support import mlflow_template, tracking_home

__all__ = ["mlflow_template", "tracking_home"]
