"""Crash leftovers, reconciled when a writable workspace first opens MLflow (and by `Workspace.reconcile`).

A process killed while it logged a compile leaves two things behind: an MLflow run stuck in RUNNING, and a
registry version without its run id (the version is committed to DuckDB before its run is logged). DuckDB lets
one process write a store, so a writable workspace knows every such run is a dead process's: it is marked
FAILED with a tag saying why (runs this process is logging are skipped). A version a compile or rollback made
before this workspace opened and that has no run id is tracked now (a run logged as a rollback's would be,
with `action=reconcile`); if MLflow refuses, it is flagged: logged and counted, and the next reconcile tries
again. Every reconciliation is logged; its counts are in the result (`Workspace.reconciliation`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from persona_agent.core.errors import TrackingError
from persona_agent.stores.personas import PersonaRecord

logger = logging.getLogger(__name__)
REASON = "reconciled: the process logging this run died before it finished"


class Reconciliation(BaseModel):
    """What one reconciliation found and did; versions are named `user@vN`."""

    model_config = ConfigDict(frozen=True)

    failed_runs: tuple[str, ...] = ()
    tracked_versions: tuple[str, ...] = ()
    flagged_versions: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return {
            "failed_runs": len(self.failed_runs),
            "tracked_versions": len(self.tracked_versions),
            "flagged_versions": len(self.flagged_versions),
        }


def reconcile(
    tracker: Any, untracked: Iterable[PersonaRecord], track: Callable[[PersonaRecord], str | None]
) -> Reconciliation:
    """Fail orphaned RUNNING runs of `tracker` (a `Tracker`) and track the `untracked` versions with `track` (the
    workspace's commit: it returns MLflow's error text, or None); raises `TrackingError` if MLflow fails.
    Called by `Workspace.reconcile`, which refuses a read-only workspace."""
    from mlflow.exceptions import MlflowException

    try:
        failed = tracker.fail_orphan_runs(REASON)
    except MlflowException as exc:
        raise TrackingError(f"cannot reconcile MLflow runs at {tracker.tracking_uri}: {exc}") from exc
    tracked, flagged = [], []
    for record in untracked:
        name = f"{record.user_id}@v{record.version}"
        error = track(record)
        if error is None:
            tracked.append(name)
        else:
            flagged.append(name)
            logger.error("reconcile: %s has no MLflow run and none could be logged: %s", name, error)
    result = Reconciliation(failed_runs=tuple(failed), tracked_versions=tuple(tracked), flagged_versions=tuple(flagged))
    if failed or tracked or flagged:
        logger.warning(
            "reconciled crash leftovers: %d RUNNING run(s) marked FAILED %s, %d version(s) without a run tracked "
            "%s, %d flagged %s",
            len(failed),
            failed,
            len(tracked),
            tracked,
            len(flagged),
            flagged,
        )
    else:
        logger.info("reconciled: no crash leftovers")
    return result
