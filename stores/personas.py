"""The persona registry: every persona version of every user, and which one is live, in the memory store's DuckDB.

Versions are immutable and numbered per user from 0 (the initial persona). The live pointer carries a
`revision` that every change bumps: a caller that read revision r may pass `expected_revision=r`, and the change
is refused with `VersionConflictError` if someone else moved the pointer in between (optimistic locking, as
Letta's memory blocks). Each change of the live pointer leaves an audit row, so rollback knows what was live
before and `events` answers "who was live when".

A rollback does not move the pointer back silently: it adds a new version (source "rollback", parent = the
version restored) with the restored text and program, and makes it live, so history only ever grows.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import duckdb

from persona_agent.core.errors import (
    InvalidInputError,
    PersonaNotFoundError,
    StoreError,
    VersionConflictError,
)
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.persona_records import (
    COLUMNS,
    LATEST,
    LIVE_ALIASES,
    SOURCES,
    LiveState,
    PersonaEvent,
    PersonaRecord,
    PersonaSource,
    VersionRef,
    json_field,
    record_from_row,
)
from persona_agent.stores.validation import validate_text, validate_user_id, validate_version

_MAX_PERSONA_CHARS = 50_000
__all__ = [  # the records belong to the registry's API: callers import them with it, from here
    "LATEST",
    "LIVE_ALIASES",
    "SOURCES",
    "LiveState",
    "PersonaEvent",
    "PersonaRecord",
    "PersonaRegistry",
    "PersonaSource",
    "VersionRef",
]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class PersonaRegistry:
    """Persona versions and the live pointer per user, in the tables of the given memory store's DuckDB file.

    Shares the store's connection and write lock (DuckDB: one read-write connection per file), so a registry
    write and a memory write never interleave. Thread-safe as the store is.
    """

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    # -- reading ----------------------------------------------------------------------------------

    def _rows(self, sql: str, params: list[Any]) -> list[tuple]:
        try:
            return self.store.query(sql, params)
        except duckdb.CatalogException as exc:
            raise StoreError(
                f"{self.store.path} has no persona tables: open it once read-write to migrate it ({exc})"
            ) from None

    def live(self, user_id: str) -> LiveState | None:
        """The user's live pointer, or None before anything was promoted."""
        user_id = validate_user_id(user_id)
        rows = self._rows(
            "SELECT user_id, version, revision, updated_at FROM persona_live WHERE user_id = ?", [user_id]
        )
        if not rows:
            return None
        user, version, revision, updated = rows[0]
        return LiveState(user_id=user, version=version, revision=revision, updated_at=updated)

    def resolve(self, user_id: str, version: VersionRef = None, field: str = "version") -> int:
        """A version number from a number or an alias: None, "live" or "champion" (the live version), "latest".
        A bad one raises `InvalidInputError` naming `field` (the caller's name for it)."""
        user_id = validate_user_id(user_id)
        if version is None or version in LIVE_ALIASES:
            live = self.live(user_id)
            if live is None:
                raise PersonaNotFoundError(user_id, "live" if version is None else version)
            return live.version
        if version == LATEST:
            rows = self._rows("SELECT max(version) FROM personas WHERE user_id = ?", [user_id])
            if rows[0][0] is None:
                raise PersonaNotFoundError(user_id)
            return int(rows[0][0])
        return validate_version(version, field, aliases=[*LIVE_ALIASES, LATEST])

    def get(self, user_id: str, version: VersionRef = None) -> PersonaRecord:
        """One version (default: the live one); raises `PersonaNotFoundError` if there is no such version."""
        number = self.resolve(user_id, version)
        rows = self._rows(f"SELECT {COLUMNS} FROM personas WHERE user_id = ? AND version = ?", [user_id, number])
        if not rows:
            raise PersonaNotFoundError(user_id, number)
        return record_from_row(rows[0])

    def program(self, user_id: str, version: VersionRef = None) -> dict[str, Any] | None:
        """The saved program (JSON document) of a version, or None for a text-only version."""
        number = self.resolve(user_id, version)
        rows = self._rows("SELECT program FROM personas WHERE user_id = ? AND version = ?", [user_id, number])
        if not rows:
            raise PersonaNotFoundError(user_id, number)
        return json.loads(rows[0][0]) if rows[0][0] is not None else None

    def history(self, user_id: str) -> list[PersonaRecord]:
        """Every version of the user, oldest first (empty for an unknown user)."""
        user_id = validate_user_id(user_id)
        rows = self._rows(f"SELECT {COLUMNS} FROM personas WHERE user_id = ? ORDER BY version", [user_id])
        return [record_from_row(r) for r in rows]

    def events(self, user_id: str) -> list[PersonaEvent]:
        """Every change of the user's live pointer, oldest first."""
        user_id = validate_user_id(user_id)
        rows = self._rows(
            "SELECT user_id, revision, changed_at, action, from_version, to_version FROM persona_events "
            "WHERE user_id = ? ORDER BY revision",
            [user_id],
        )
        return [
            PersonaEvent(user_id=u, revision=r, at=at, action=a, from_version=f, to_version=t)
            for u, r, at, a, f, t in rows
        ]

    def users(self) -> list[str]:
        """Every user with at least one persona version, sorted."""
        return [r[0] for r in self._rows("SELECT DISTINCT user_id FROM personas ORDER BY user_id", [])]

    def live_versions(self) -> dict[str, LiveState]:
        """The live pointer of every user that has one."""
        rows = self._rows("SELECT user_id, version, revision, updated_at FROM persona_live ORDER BY user_id", [])
        return {u: LiveState(user_id=u, version=v, revision=r, updated_at=t) for u, v, r, t in rows}

    def diff(self, user_id: str, a: VersionRef, b: VersionRef = None) -> str:
        """A unified text diff from version `a` to version `b` (default: the live one); '' when equal."""
        old, new = self.get(user_id, self.resolve(user_id, a, "a")), self.get(user_id, self.resolve(user_id, b, "b"))
        return "".join(
            difflib.unified_diff(
                old.text.splitlines(keepends=True),
                new.text.splitlines(keepends=True),
                fromfile=f"{user_id}@v{old.version}",
                tofile=f"{user_id}@v{new.version}",
            )
        )

    # -- writing ----------------------------------------------------------------------------------

    def add(
        self,
        user_id: str,
        text: str,
        *,
        source: PersonaSource = "manual",
        parent: int | None = None,
        strategy: str | None = None,
        scores: Mapping[str, Any] | None = None,
        usage: Mapping[str, Any] | None = None,
        program: Mapping[str, Any] | None = None,
        mlflow_run_id: str | None = None,
    ) -> PersonaRecord:
        """Store a new version (numbered max + 1, or 0 for the first). It is not made live: see `promote`.

        A `program` document gets this version's persona written into it."""
        user_id = validate_user_id(user_id)
        with self.store.transaction() as cur:
            return self._insert(cur, user_id, text, source, parent, strategy, scores, usage, program, mlflow_run_id)

    def _insert(
        self,
        cur: duckdb.DuckDBPyConnection,
        user_id: str,
        text: str,
        source: str,
        parent: int | None,
        strategy: str | None,
        scores: Mapping[str, Any] | None,
        usage: Mapping[str, Any] | None,
        program: Mapping[str, Any] | None,
        mlflow_run_id: str | None,
    ) -> PersonaRecord:
        text = validate_text(text, "text", _MAX_PERSONA_CHARS)
        if source not in SOURCES:
            raise InvalidInputError("source", source, f"must be one of {list(SOURCES)}")
        scores_json, usage_json = json_field(scores, "scores"), json_field(usage, "usage")
        top = cur.execute("SELECT max(version) FROM personas WHERE user_id = ?", [user_id]).fetchall()[0][0]
        version = 0 if top is None else int(top) + 1
        if parent is not None:
            if isinstance(parent, bool) or not isinstance(parent, int) or not 0 <= parent < version:
                raise InvalidInputError("parent", parent, f"must be an existing version below {version}")
        record = PersonaRecord(
            user_id=user_id,
            version=version,
            text=text,
            parent=parent,
            source=source,
            created_at=_now(),
            strategy=strategy,
            scores=json.loads(scores_json),
            usage=json.loads(usage_json),
            mlflow_run_id=mlflow_run_id,
        )
        program_json = None if program is None else json_field({**program, "persona": record.persona_dict()}, "program")
        cur.execute(
            "INSERT INTO personas VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                *(user_id, version, text, parent, source, record.created_at, strategy),
                *(scores_json, usage_json, mlflow_run_id, program_json),
            ],
        )
        return record

    def ensure_live(
        self, user_id: str, initial: Callable[[], tuple[str, Mapping[str, Any] | None]]
    ) -> tuple[LiveState, bool]:
        """The user's live pointer, creating it atomically when missing: the latest version is made live, or,
        for a user with no versions, `initial()` -> (text, program) is stored as version 0 (source "init") and
        made live. Returns (state, created)."""
        user_id = validate_user_id(user_id)
        live = self.live(user_id)
        if live is not None:
            return live, False
        with self.store.transaction() as cur:
            rows = cur.execute(
                "SELECT version, revision, updated_at FROM persona_live WHERE user_id = ?", [user_id]
            ).fetchall()
            if rows:  # another thread got here first
                version, revision, updated = rows[0]
                return LiveState(user_id=user_id, version=version, revision=revision, updated_at=updated), False
            top = cur.execute("SELECT max(version) FROM personas WHERE user_id = ?", [user_id]).fetchall()[0][0]
            if top is None:
                text, program = initial()
                top = self._insert(cur, user_id, text, "init", None, None, None, None, program, None).version
            return self._move(cur, user_id, int(top), "promote", 0), True

    def set_run_id(self, user_id: str, version: int, run_id: str) -> None:
        """Record the MLflow run that tracks a version."""
        user_id = validate_user_id(user_id)
        with self.store.transaction() as cur:
            cur.execute(
                "UPDATE personas SET mlflow_run_id = ? WHERE user_id = ? AND version = ?", [run_id, user_id, version]
            )

    def promote(self, user_id: str, version: VersionRef, *, expected_revision: int | None = None) -> LiveState:
        """Make a version live. With `expected_revision`, refuse (`VersionConflictError`) if the pointer moved."""
        number = self.resolve(user_id, version)
        with self.store.transaction() as cur:
            return self._move(cur, user_id, number, "promote", expected_revision)

    def rollback(
        self, user_id: str, to: VersionRef = None, *, expected_revision: int | None = None
    ) -> tuple[PersonaRecord, LiveState]:
        """Restore an earlier version as a new live version (source "rollback", parent = the restored version),
        in one transaction. `to` defaults to the version that was live before the current one."""
        user_id = validate_user_id(user_id)
        live = self.live(user_id)
        if live is None:
            raise PersonaNotFoundError(user_id, "live")
        if to is None:
            earlier = [e.from_version for e in self.events(user_id) if e.from_version is not None]
            candidates = [v for v in reversed(earlier) if v != live.version]
            if not candidates:
                raise InvalidInputError("to", None, f"user {user_id!r} has no earlier live version to roll back to")
            target = candidates[0]
        else:
            target = self.resolve(user_id, to, "to")
        restored = self.get(user_id, target)
        program = self.program(user_id, target)
        with self.store.transaction() as cur:
            record = self._insert(
                cur, user_id, restored.text, "rollback", restored.version, restored.strategy, restored.scores,
                None, program, None,
            )  # fmt: skip
            state = self._move(
                cur, user_id, record.version, "rollback",
                live.revision if expected_revision is None else expected_revision,
            )  # fmt: skip
        return record, state

    def _move(
        self, cur: duckdb.DuckDBPyConnection, user_id: str, version: int, action: str, expected_revision: int | None
    ) -> LiveState:
        if not cur.execute("SELECT 1 FROM personas WHERE user_id = ? AND version = ?", [user_id, version]).fetchall():
            raise PersonaNotFoundError(user_id, version)
        rows = cur.execute("SELECT version, revision FROM persona_live WHERE user_id = ?", [user_id]).fetchall()
        current, revision = rows[0] if rows else (None, 0)
        if expected_revision is not None and expected_revision != revision:
            raise VersionConflictError(user_id, expected_revision, revision)
        now = _now()
        if rows:
            cur.execute(
                "UPDATE persona_live SET version = ?, revision = ?, updated_at = ? WHERE user_id = ?",
                [version, revision + 1, now, user_id],
            )
        else:
            cur.execute("INSERT INTO persona_live VALUES (?, ?, ?, ?)", [user_id, version, 1, now])
        cur.execute(
            "INSERT INTO persona_events VALUES (?, ?, ?, ?, ?, ?)",
            [user_id, revision + 1, now, action, current, version],
        )
        return LiveState(user_id=user_id, version=version, revision=revision + 1, updated_at=now)

    def forget(self, user_id: str) -> dict[str, int]:
        """Remove every version, the live pointer and the audit rows of one user, in one transaction."""
        user_id = validate_user_id(user_id)
        counts = {}
        with self.store.transaction() as cur:
            for table, key in (("personas", "personas"), ("persona_live", "live"), ("persona_events", "events")):
                counts[key] = int(cur.execute(f"DELETE FROM {table} WHERE user_id = ?", [user_id]).fetchall()[0][0])
        return counts

    def untracked(self, before: datetime) -> list[PersonaRecord]:
        """Versions a compile or rollback made before `before` (UTC) that never got their MLflow run id: the
        leftovers of a process that died while logging them (`persona_agent.reconciling`)."""
        rows = self._rows(
            f"SELECT {COLUMNS} FROM personas WHERE mlflow_run_id IS NULL AND source IN ('aligned', 'rollback') "
            "AND created_at < ? ORDER BY user_id, version",
            [before],
        )
        return [record_from_row(r) for r in rows]
