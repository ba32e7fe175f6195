"""Forgetting a user, in one place: the CLI's `forget` and the service's `DELETE /v1/users/{id}` both call this.

Order matters: first the sources of truth in DuckDB (memory rows and vectors, profiles, persona versions,
live pointer, audit rows) in the store, then every in-process cache (FAISS partitions, ready programs, jobs),
then MLflow (the user's runs with their artifacts, and their registered model). MLflow goes last because the
runs are found again by their `user_id` tag, so a forget that fails there can simply be run again.

On disk: DuckDB keeps deleted rows' bytes in freed blocks, so the file is rewritten by a compaction due within
`compaction_delay_seconds` (the report's `erased_by`; at once with `MemoryStore.compact`, always on close); the
MLflow runs are hard-deleted, their artifact folders removed and a SQLite tracking database vacuumed at once.
See docs/forgetting.md.

While a user is being forgotten, no compile can commit for them (the workspace's commit lock), and a compile
that started before the forget will not write its result afterwards (the user's forget epoch moved).

Not covered: DSPy's on-disk LM response cache (`lm_cache`) is addressed by prompt hashes, not users, and keeps
prompts (with the user's rows) under `<home>/cache/dspy`; run services that hold personal data with
`PERSONA_AGENT_LM_CACHE=false`.
"""

from __future__ import annotations

from persona_agent.core.errors import TrackingError
from persona_agent.stores.records import ForgetReport
from persona_agent.stores.validation import validate_user_id
from persona_agent.workspace import Workspace


def forget_user(workspace: Workspace, user_id: str) -> ForgetReport:
    """Remove every trace of `user_id` and return what was removed, per place. Idempotent.

    Raises `TrackingError` if MLflow could not be cleaned (everything else is already gone; run it again)."""
    user_id = validate_user_id(user_id)
    with workspace.commit_lock:
        workspace._bump_epoch(user_id)
        workspace.revocations.revoke(user_id)  # first: no token issued until now can write the user back
        run_ids = [r.mlflow_run_id for r in workspace.registry.history(user_id) if r.mlflow_run_id]
        memory = workspace.store.forget(user_id)  # rows, vectors (and their FAISS partition), profiles
        personas = workspace.registry.forget(user_id)
        erased_by = workspace.store.schedule_compaction()  # the registry's rows share the store's file
        extra: dict[str, int] = {
            "personas": personas["personas"],
            "persona_live": personas["live"],
            "persona_events": personas["events"],
        }
        for name, holder in workspace.forgettables():
            extra[name] = int(holder.forget(user_id))
        if workspace.tracking_started():
            try:
                extra.update(workspace.tracker.forget(user_id, run_ids))
            except TrackingError:
                raise
            except Exception as exc:  # MLflow's own errors: say what is left and how to finish
                raise TrackingError(
                    f"forgot {user_id!r} in DuckDB and caches, but MLflow failed ({exc}); run forget again"
                ) from exc
    return memory.model_copy(update={"extra": {**memory.extra, **extra}, "erased_by": erased_by})
