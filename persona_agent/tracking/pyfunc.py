"""The MLflow pyfunc form of a persona program, logged "from code": no pickle, no LM inside.

The model's one artifact is the saved program (`program.json`, see `persona_agent.programs.saved`); the code
that loads it is `pyfunc_code.py` next to this file. At prediction time the program answers with the LM
configured where it is loaded (`dspy.configure(lm=...)` or `dspy.context(lm=...)`), else with the `lm`
setting of the environment (`PERSONA_AGENT_LM`), so a registered persona moves between machines and LMs
without carrying any model setting or key.

Pass `model_config={"db_path": "/path/memory.duckdb"}` to `mlflow.pyfunc.load_model` to give the agent its
memory tools over a store opened read-only (DuckDB: only while no other process writes the file).
"""

from __future__ import annotations

import json
import tempfile
import threading
import warnings
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import dspy
from mlflow.pyfunc import PythonModel

from persona_agent.programs.documents import DISTRIBUTION, package_version

CODE_PATH = Path(__file__).with_name("pyfunc_code.py")
PROGRAM_ARTIFACT = "program"
PROGRAM_FILE = "program.json"


def save_program_model(document: Mapping[str, Any], path: Path) -> Path:
    """Write the pyfunc model of a saved program into the folder `path` (which must not exist yet)."""
    import mlflow.pyfunc

    with tempfile.TemporaryDirectory(prefix="persona-program-") as tmp:
        program = Path(tmp) / PROGRAM_FILE
        program.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow nags about input examples; ours would call an LM
            mlflow.pyfunc.save_model(
                path=str(path),
                python_model=str(CODE_PATH),
                artifacts={PROGRAM_ARTIFACT: str(program)},
                model_config={"db_path": None},
                pip_requirements=requirements(),
            )
    _keep_names_only(path)
    return path


def _keep_names_only(path: Path) -> None:
    """MLflow records where the model's code and artifact were on the logging machine (absolute paths); loading
    uses only their names inside the model folder. Keep those, so no local path travels with the model."""
    from mlflow.models import Model

    mlmodel = path / "MLmodel"
    model = Model.load(str(mlmodel))
    flavor = model.flavors["python_function"]
    flavor["model_code_path"] = Path(flavor["model_code_path"]).name
    for artifact in flavor.get("artifacts", {}).values():
        artifact["uri"] = artifact["path"]
    model.save(str(mlmodel))


def requirements() -> list[str]:
    """Pinned requirements of the logged model (given, so MLflow does not infer them by running the model).
    Ours only when installed under its distribution name (a bare checkout, or one installed under an older
    name, has no version to pin)."""
    ours = package_version()
    pinned = [] if ours == "unknown" else [f"{DISTRIBUTION}=={ours}"]
    return pinned + [f"{name}=={metadata.version(name)}" for name in ("dspy", "mlflow")]


class PersonaProgramModel(PythonModel):
    """Rows of task inputs (e.g. `[{"request": "..."}]`, or a DataFrame) -> rows of task outputs."""

    def load_context(self, context: Any) -> None:
        from persona_agent.programs.saved import ProgramFactory, upgrade_document
        from persona_agent.stores.memory import MemoryStore

        document = json.loads(Path(context.artifacts[PROGRAM_ARTIFACT]).read_text(encoding="utf-8"))
        config = dict(context.model_config or {})
        store = MemoryStore(config["db_path"], read_only=True) if config.get("db_path") else None
        self.agent = ProgramFactory(store=store).build(upgrade_document(document))
        self._fallback_lm: dspy.BaseLM | None = None
        self._lock = threading.Lock()

    def _lm(self) -> tuple[dspy.BaseLM, Any]:
        if dspy.settings.lm is not None:
            return dspy.settings.lm, dspy.settings.adapter
        from persona_agent.lm.models import adapter_for, make_lm

        with self._lock:
            if self._fallback_lm is None:
                self._fallback_lm = make_lm()
        return self._fallback_lm, adapter_for(self._fallback_lm)

    def predict(
        self, context: Any, model_input: list[dict[str, str]], params: dict[str, Any] | None = None
    ) -> list[dict[str, str]]:
        lm, adapter = self._lm()
        outputs = list(self.agent.task_signature.output_fields)
        rows = []
        with dspy.context(lm=lm, adapter=adapter):
            for row in model_input:
                prediction = self.agent(**{k: str(v) for k, v in row.items()})
                rows.append({k: str(prediction[k]) for k in outputs})
        return rows
