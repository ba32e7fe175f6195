"""MLflow tracking of persona versions: one run per compile (and per rollback), optional registered models.

Each run is tagged with the user id, persona version, parent version, strategy and source; its params are the
compile's settings (n, iterations, the LM's model name, K, budgets) and its metrics the metric per iteration
plus LM calls, tokens and seconds; its artifacts are `persona.md`, `program.json` (the saved program: DSPy JSON
state + our metadata), `alignment_trace.json` and `persona.diff` against the parent.

With `register_model`, the run also holds `model/`: a pyfunc logged *from code* whose only artifact is the
program JSON, registered as a version of `persona-<user id>` with the alias `champion` moved on promote.
Each version is also a version of the prompt `persona.<user id>` in MLflow's prompt registry, alias `live`
(`persona_agent.tracking.prompts`).

Nothing here writes an LM's settings or an API key: params carry the model *name* only, and saved programs
carry no LM (see `persona_agent.programs.saved`). Everything talks to MLflow through one `MlflowClient` bound
to the configured tracking URI; no global MLflow state is touched, and nothing is created before first use.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, TrackingError
from persona_agent.stores.personas import PersonaRecord
from persona_agent.tracking.erasure import delete_runs, sqlite_file, vacuum_sqlite
from persona_agent.tracking.names import model_name
from persona_agent.tracking.prompts import PersonaPrompts, is_prompt_ref
from persona_agent.tracking.sqlite import use_wal

CHAMPION = "champion"
PROGRAM_FILE = "program.json"
MODEL_DIR = "model"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_PARAM = 6000
STORE_TAG = "persona_agent.store"
"""The DuckDB file whose registry the run tracks: a tracking server shared by several homes reconciles only its own."""
RECONCILED_TAG = "persona_agent.reconciled"
# Runs being logged by this process (any Tracker): reconciliation never fails them. Held while a run is created
# and added, and while orphans are found and failed, so a run cannot be seen RUNNING before it is registered here.
_LIVE_RUNS: set[str] = set()
_LIVE_LOCK = threading.Lock()


def is_run_id(ref: str) -> bool:
    return bool(_RUN_ID.match(ref))


class Tracker:
    """MLflow runs, artifacts and registered models of persona versions, for one tracking URI and experiment."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.tracking_uri = self.settings.resolved_tracking_uri
        self.experiment_name = self.settings.mlflow_experiment
        self.store_id = str(self.settings.resolved_db_path.resolve())
        self._client = None
        self._experiment_id: str | None = None
        self._prompts: PersonaPrompts | None = None
        self._lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def client(self):
        """The `MlflowClient` (MLflow is imported, and a sqlite file's folder made, on first use)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    from mlflow import MlflowClient

                    parsed = urlparse(self.tracking_uri)
                    database = sqlite_file(self.tracking_uri)
                    try:  # a folder that cannot be made, a database that cannot be opened: not MLflow's errors
                        if parsed.scheme == "sqlite" and parsed.path not in ("", "/:memory:"):
                            Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
                        if database is not None:
                            use_wal(database)  # before MLflow's engine opens a connection (`tracking.sqlite`)
                        self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                    except Exception as exc:
                        raise TrackingError(f"cannot open the MLflow store at {self.tracking_uri}: {exc}") from exc
        return self._client

    @property
    def prompts(self) -> PersonaPrompts:
        """The users' prompts in MLflow's prompt registry (at most `mlflow_prompt_versions` versions each)."""
        if self._prompts is None:
            self._prompts = PersonaPrompts(self.client, self.settings.mlflow_prompt_versions)
        return self._prompts

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            client = self.client
            with self._lock:
                if self._experiment_id is None:
                    found = client.get_experiment_by_name(self.experiment_name)
                    if found is not None and found.lifecycle_stage != "active":
                        client.restore_experiment(found.experiment_id)
                    self._experiment_id = (
                        found.experiment_id
                        if found is not None
                        else client.create_experiment(
                            self.experiment_name, artifact_location=self.settings.resolved_artifact_location
                        )
                    )
        return self._experiment_id

    # -- logging ------------------------------------------------------------------------------------

    def log_version(
        self,
        record: PersonaRecord,
        *,
        document: Mapping[str, Any] | None,
        diff: str = "",
        trace: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        register_model: bool = False,
        changed: bool = True,
    ) -> str:
        """One run for one persona version (a compile, or a rollback); returns its run id."""
        from mlflow.entities import Metric, Param, RunTag

        client = self.client
        tags = {
            "user_id": record.user_id,
            "persona_version": str(record.version),
            "parent_version": "" if record.parent is None else str(record.parent),
            "strategy": record.strategy or "",
            "source": record.source,
            "changed": str(changed).lower(),
            "mlflow.runName": f"{record.user_id}-v{record.version}",
            STORE_TAG: self.store_id,
        }
        if trace and "persona_check" in trace:  # GEPA/COPRO: find unsafe personas with a run filter
            tags["persona_check"] = str(trace["persona_check"])
        with _LIVE_LOCK:
            try:  # the experiment lookup too: it is a first call to a store that may be out of reach
                run = self._create_run(tags)
            except Exception as exc:
                raise TrackingError(f"cannot start an MLflow run at {self.tracking_uri}: {exc}") from exc
            run_id = run.info.run_id
            _LIVE_RUNS.add(run_id)
        try:
            metrics = [Metric(k, v, 0, step) for k, v, step in _metrics(trace, record)]
            plain = [Param(k, str(v)[:_MAX_PARAM]) for k, v in sorted((params or {}).items()) if v is not None]
            client.log_batch(run_id, metrics=metrics, params=plain, tags=[RunTag("persona_agent.format", "1")])
            files: dict[str, str] = {"persona.md": record.text, "persona.diff": diff}
            if document is not None:
                files[PROGRAM_FILE] = json.dumps(dict(document), indent=2, default=str)
            if trace is not None:
                files["alignment_trace.json"] = json.dumps(dict(trace), indent=2, default=str)
            _log_files(client, run_id, files)
            if register_model and document is not None:
                self._log_model(run_id, document)
            client.set_terminated(run_id, "FINISHED")
        except Exception as exc:
            with contextlib.suppress(Exception):  # refused too if the store is gone: a reconcile fails the run
                client.set_terminated(run_id, "FAILED")
            raise TrackingError(f"MLflow run {run_id} failed while logging: {exc}") from exc
        finally:
            with _LIVE_LOCK:
                _LIVE_RUNS.discard(run_id)
        return run_id

    def _create_run(self, tags: Mapping[str, str]) -> Any:
        """A new run in the experiment. Refused, it is tried once more after the experiment is looked up again:
        deleted in MLflow (its UI) since this process looked it up, it is restored, as on first use, or made again."""
        from mlflow.exceptions import MlflowException

        experiment_id = self.experiment_id  # out of reach: raised once, not looked up again
        try:
            return self.client.create_run(experiment_id, tags=tags)
        except MlflowException:
            self._experiment_id = None
            return self.client.create_run(self.experiment_id, tags=tags)

    def fail_orphan_runs(self, reason: str) -> list[str]:
        """Mark FAILED, tagged with `reason`, every run of this store left RUNNING that no thread of this
        process is logging: DuckDB lets one process write the store, so such a run's process is dead."""
        from mlflow.entities import RunTag, ViewType

        client, experiment_id = self.client, self.experiment_id
        failed, token = [], None
        with _LIVE_LOCK:
            while True:
                page = client.search_runs(
                    [experiment_id],
                    "attributes.status = 'RUNNING'",
                    run_view_type=ViewType.ACTIVE_ONLY,
                    max_results=1000,
                    page_token=token,
                )
                failed += [
                    r.info.run_id
                    for r in page
                    if r.info.run_id not in _LIVE_RUNS and r.data.tags.get(STORE_TAG, self.store_id) == self.store_id
                ]
                token = page.token
                if not token:
                    break
            for run_id in failed:
                client.log_batch(run_id, tags=[RunTag(RECONCILED_TAG, reason)])
                client.set_terminated(run_id, "FAILED")
        return failed

    def _log_model(self, run_id: str, document: Mapping[str, Any]) -> None:
        """Log `model/`: the pyfunc from code, whose one artifact is the program JSON."""
        from persona_agent.tracking.pyfunc import save_program_model

        with tempfile.TemporaryDirectory(prefix="persona-model-") as tmp:
            save_program_model(document, Path(tmp) / MODEL_DIR)
            self.client.log_artifacts(run_id, str(Path(tmp) / MODEL_DIR), MODEL_DIR)

    def _has_model(self, run_id: str) -> bool:
        return any(f.path == f"{MODEL_DIR}/MLmodel" for f in self.client.list_artifacts(run_id, MODEL_DIR))

    # -- registered models --------------------------------------------------------------------------

    def set_champion(self, record: PersonaRecord, document: Mapping[str, Any] | None) -> str:
        """Point `persona-<user>@champion` at this persona version, registering it first if needed.
        Returns the model version. The version's run gets its `model/` now if it was logged without one."""
        from mlflow.exceptions import MlflowException

        if record.mlflow_run_id is None:
            raise TrackingError(f"persona {record.user_id}@v{record.version} has no MLflow run to register")
        client = self.client
        name = model_name(record.user_id)
        try:
            try:
                client.get_registered_model(name)
            except MlflowException:
                client.create_registered_model(name, tags={"user_id": record.user_id})
            existing = [
                mv
                for mv in client.search_model_versions(f"name = '{name}'")
                if mv.tags.get("persona_version") == str(record.version)
            ]
            if existing:
                version = existing[0].version
            else:
                if not self._has_model(record.mlflow_run_id):
                    if document is None:
                        raise TrackingError(f"persona {record.user_id}@v{record.version} has no saved program")
                    self._log_model(record.mlflow_run_id, document)
                run = client.get_run(record.mlflow_run_id)
                version = client.create_model_version(
                    name,
                    source=f"{run.info.artifact_uri}/{MODEL_DIR}",
                    run_id=record.mlflow_run_id,
                    tags={"user_id": record.user_id, "persona_version": str(record.version)},
                ).version
            client.set_registered_model_alias(name, CHAMPION, version)
        except (MlflowException, OSError) as exc:  # OSError: writing `model/` (a full disk, an HTTP artifact store)
            raise TrackingError(f"cannot register {name}: {exc}") from exc
        return str(version)

    # -- reading ------------------------------------------------------------------------------------

    def run_of(self, ref: str) -> str:
        """The run id behind a run id, `runs:/<id>[/...]`, `models:/<name>@<alias>`, `models:/<name>/<version>`
        or `prompts:/<name>@<alias>` / `prompts:/<name>/<version>`."""
        from mlflow.exceptions import MlflowException

        if is_prompt_ref(ref):
            return self.prompts.run_of(ref)
        if ref.startswith("runs:/"):
            return ref[len("runs:/") :].split("/", 1)[0]
        if ref.startswith("models:/"):
            rest = ref[len("models:/") :].strip("/")
            try:
                if "@" in rest:
                    name, alias = rest.split("@", 1)
                    mv = self.client.get_model_version_by_alias(name, alias)
                elif "/" in rest:
                    name, number = rest.rsplit("/", 1)
                    mv = self.client.get_model_version(name, number)
                else:
                    raise InvalidInputError("version", ref, "a models URI is models:/<name>@<alias> or /<version>")
            except MlflowException as exc:
                raise TrackingError(f"no registered model version for {ref}: {exc}") from exc
            if not mv.run_id:
                raise TrackingError(f"{ref} is not linked to a run")
            return mv.run_id
        if is_run_id(ref):
            return ref
        raise InvalidInputError("version", ref, "expected an MLflow run id, runs:/, models:/ or prompts:/ URI")

    def load_document(self, ref: str) -> dict[str, Any]:
        """The saved program logged with a run (by run id or URI, see `run_of`)."""
        from mlflow.exceptions import MlflowException

        run_id = self.run_of(ref)
        where = ref if ref == run_id else f"{ref} (run {run_id})"
        with tempfile.TemporaryDirectory(prefix="persona-program-") as tmp:
            try:
                path = self.client.download_artifacts(run_id, PROGRAM_FILE, tmp)
            except MlflowException as exc:
                raise TrackingError(f"no {PROGRAM_FILE} for {where}: {exc}") from exc
            try:  # an artifact store's partial write or a hand edit: name the run, not a JSON parser's position
                return json.loads(Path(path).read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise TrackingError(f"the {PROGRAM_FILE} of {where} is not a saved program: {exc}") from exc

    def user_runs(self, user_id: str) -> list[str]:
        """Every run of the user in the experiment, deleted ones included."""
        from mlflow.entities import ViewType

        if "'" not in user_id:
            flt = f"tags.user_id = '{user_id}'"
        elif '"' not in user_id:
            flt = f'tags.user_id = "{user_id}"'
        else:  # an id holding both quotes cannot be written in a filter: scan
            flt = ""
        found, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], flt, run_view_type=ViewType.ALL, max_results=1000, page_token=token
            )
            found += [r.info.run_id for r in page if r.data.tags.get("user_id") == user_id]
            token = page.token
            if not token:
                return found

    # -- forgetting ---------------------------------------------------------------------------------

    def forget(self, user_id: str, run_ids: Iterable[str] = ()) -> dict[str, int]:
        """Delete the user's registered model, their prompt, and every run of theirs, with artifacts.

        Runs are hard-deleted (rows and artifacts) when the tracking store is local (sqlite or files), as
        `mlflow gc` would, and a SQLite database is then vacuumed (rewritten), so no byte of the deleted rows
        stays in its free pages; a remote tracking server only soft-deletes them, and `mlflow gc` must run
        there: `mlflow_runs_soft_only` counts those."""
        from mlflow.exceptions import MlflowException

        client = self.client
        counts = {"mlflow_runs": 0, "mlflow_model_versions": 0, "mlflow_registered_models": 0}
        name = model_name(user_id)
        try:
            versions = client.search_model_versions(f"name = '{name}'")
            client.delete_registered_model(name)
            counts["mlflow_registered_models"] = 1
            counts["mlflow_model_versions"] = len(versions)
        except MlflowException as exc:  # none (never made, deleted in MLflow, forgotten before) is not an error
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(f"cannot delete the registered model {name}: {exc}") from exc
        counts["mlflow_prompt_versions"] = self.prompts.forget(user_id)
        deleted, hard = delete_runs(client, sorted(set(run_ids) | set(self.user_runs(user_id))))
        counts["mlflow_runs"] = deleted
        if not hard and deleted:
            counts["mlflow_runs_soft_only"] = deleted
        if counts["mlflow_runs"] or counts["mlflow_registered_models"] or counts["mlflow_prompt_versions"]:
            vacuum_sqlite(self.tracking_uri)
        return counts


def _metrics(trace: Mapping[str, Any] | None, record: PersonaRecord) -> list[tuple[str, float, int]]:
    out: list[tuple[str, float, int]] = []
    if trace:
        for step in trace.get("iterations", []):
            for key in ("metric", "candidate_metric"):
                if isinstance(step.get(key), int | float):
                    out.append((key, float(step[key]), int(step.get("iteration", 0))))
        if isinstance(trace.get("seconds"), int | float):
            out.append(("seconds", float(trace["seconds"]), 0))
    usage = record.usage or {}
    for key, name in (
        ("calls", "lm_calls"),
        ("cache_hits", "lm_cache_hits"),
        ("errors", "lm_errors"),
        ("prompt_tokens", "prompt_tokens"),
        ("completion_tokens", "completion_tokens"),
        ("total_tokens", "total_tokens"),
        ("lm_seconds", "lm_seconds"),
    ):
        if isinstance(usage.get(key), int | float):
            out.append((name, float(usage[key]), 0))
    for key, value in (record.scores or {}).items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            out.append((f"score_{key}", float(value), 0))
    return out


def _log_files(client: Any, run_id: str, files: Mapping[str, str]) -> None:
    """The run's text artifacts in one `log_artifacts` call (one artifact-store round trip, not one per file:
    the driver of a fan-out logs them for every user)."""
    with tempfile.TemporaryDirectory(prefix="persona-run-") as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        client.log_artifacts(run_id, tmp)
