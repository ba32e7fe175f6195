"""Forgetting a user: what it removes, in which order, and what it does not cover. The CLI's `forget` and the
service's `DELETE /v1/users/{id}` both run `Workspace.forget` (in `persona_agent.lifecycle`, next to the commit
it must exclude); `forget_user` here is the same call.

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

from persona_agent.stores.records import ForgetReport
from persona_agent.workspace import Workspace


def forget_user(workspace: Workspace, user_id: str) -> ForgetReport:
    """Remove every trace of `user_id` and return what was removed, per place. Idempotent.

    Raises `TrackingError` if MLflow could not be cleaned (everything else is already gone; run it again)."""
    return workspace.forget(user_id)
