"""The code MLflow runs to load a logged persona program ("models from code", see `pyfunc.py`).

MLflow copies this file into each logged model and executes it at load time; the package never imports it.
"""

import mlflow

from persona_agent.tracking.pyfunc import PersonaProgramModel

mlflow.models.set_model(PersonaProgramModel())
