"""Erasing a forgotten user's MLflow runs from disk, not just hiding them.

A local tracking store (sqlite or files) gets what `mlflow gc` does: each run's artifacts removed and its rows
hard-deleted, then a SQLite database vacuumed (rewritten) so no byte of the deleted rows stays in its free pages.
A remote tracking server only soft-deletes runs; `mlflow gc` must run there.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from persona_agent.core.errors import TrackingError


def delete_runs(client: Any, run_ids: Iterable[str]) -> tuple[int, bool]:
    """Delete the runs that exist (hard when the backend can); returns (runs deleted, whether hard)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    backend = getattr(getattr(client, "_tracking_client", None), "store", None)
    hard = hasattr(backend, "_hard_delete_run")
    deleted = 0
    for run_id in run_ids:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:  # gone (`mlflow gc`, forgotten before) is not an error; a refusal is
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                continue
            raise TrackingError(f"cannot delete the MLflow run {run_id}: {exc}") from exc
        if run.info.lifecycle_stage == "active":
            client.delete_run(run_id)
        if hard:
            get_artifact_repository(run.info.artifact_uri).delete_artifacts()
            _remove_empty_parent(run.info.artifact_uri)
            backend._hard_delete_run(run_id)
        deleted += 1
    return deleted, hard


def vacuum_sqlite(tracking_uri: str) -> None:
    """Rewrite a `sqlite:` tracking database (nothing for any other store)."""
    database = sqlite_file(tracking_uri)
    if database is not None:
        with contextlib.closing(sqlite3.connect(database, timeout=60)) as con:
            con.execute("VACUUM")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # in WAL mode: no deleted page stays in -wal


def sqlite_file(uri: str) -> str | None:
    """The database file of a `sqlite:` tracking URI (as SQLAlchemy reads it), else None."""
    from sqlalchemy.engine import make_url

    if not uri.startswith("sqlite:"):
        return None
    database = make_url(uri).database
    return database if database and database != ":memory:" else None


def _remove_empty_parent(artifact_uri: str) -> None:
    """A local run's `<root>/<run id>/artifacts` leaves `<root>/<run id>`: remove it when empty."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        parent = Path(parsed.path).parent
        if parent.is_dir() and not any(parent.iterdir()):
            shutil.rmtree(parent, ignore_errors=True)
