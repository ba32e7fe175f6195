"""Fixtures of the registry and tracking tests (see tests/support.py)."""

from tests.support import mlflow_template, tracking_home

__all__ = ["mlflow_template", "tracking_home"]
