"""Fixtures of the MLflow tracking, prompt registry and pyfunc tests (see tests/support.py)."""

from tests.support import mlflow_template, tracking_home

__all__ = ["mlflow_template", "tracking_home"]
