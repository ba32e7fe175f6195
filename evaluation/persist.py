"""What makes a run resumable: an append-only results log and a per-user state cache.

- `ResultLog` is JSON lines, one row per finished unit of work, flushed and fsynced as it finishes; a
  key identifies each row and the last row for a key wins (so a retried example replaces its failure).
  A torn last line (the process died mid-write) is dropped on load and cut from the file.
- `StateCache` keeps the expensive per-user work (profile, personas and their alignment traces) as one
  JSON file per user, written atomically. It can hold text derived from the data, so its folder gets a
  `.gitignore` and is never committed; the results log holds item ids, labels and costs only, and names
  users by `records.user_key`, not by their dataset ids.
- Format 1 logs named users by dataset id (`user_id`); `ResultLog.load` rewrites such a log to the current
  format in place, once, so older runs keep resuming.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from persona_agent.core.records import user_key
from persona_agent.evaluation.builders import slugify_user_id
from persona_agent.evaluation.errors import EvalLogError

logger = logging.getLogger(__name__)

Row = dict[str, Any]
RowKey = tuple[str, ...]

LOG_FORMAT = "persona_agent.eval/2"  # results log and results file format
_FORMAT_1 = "persona_agent.eval/1"


def row_key(row: Row) -> RowKey:
    """What a row is about: ("prediction", method, user, query), ("setup", stage, user) or ("meta",)."""
    kind = row.get("kind")
    if kind == "prediction":
        return ("prediction", row["method"], row["user"], row["query_id"])
    if kind == "setup":
        return ("setup", row["stage"], row["user"])
    return (str(kind),)


def upgrade_rows(rows: list[Row]) -> list[Row] | None:
    """Format-1 rows in the current format (users named by key), or None when they need no change.

    Raises `EvalLogError` for a format this version does not know (a log written by a newer one)."""
    formats = {r["format"] for r in rows if r.get("kind") == "meta" and "format" in r}
    if unknown := formats - {LOG_FORMAT, _FORMAT_1}:
        raise EvalLogError(f"results log format {sorted(map(str, unknown))} is not one this version reads")
    if _FORMAT_1 not in formats:
        return None
    upgraded = []
    for row in rows:
        row = dict(row)
        if row.get("kind") == "meta":
            task = row["config"]["task"]
            row["format"] = LOG_FORMAT
            row["identity"] = {**row["identity"], "format": LOG_FORMAT}
            row["users"] = [user_key(task, u) for u in row["users"]]
            row["queries"] = {user_key(task, u): ids for u, ids in row["queries"].items()}
        elif "user_id" in row:
            row["user"] = user_key(row["task"], row.pop("user_id"))
        upgraded.append(row)
    return upgraded


def text_digest(text: str | None) -> str | None:
    """A short fingerprint of a derived text (a profile) for the committed log, which never holds the text."""
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def latest_rows(rows: Iterable[Row]) -> dict[RowKey, Row]:
    """The last row for each key, in first-seen order."""
    latest: dict[RowKey, Row] = {}
    for row in rows:
        latest[row_key(row)] = row
    return latest


class ResultLog:
    """An append-only JSONL file shared by the worker threads of one run (one writer process)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def load(self) -> list[Row]:
        """Every complete row, oldest first; a torn last line is removed, a format-1 log upgraded in place."""
        rows = self._read()
        upgraded = upgrade_rows(rows)
        if upgraded is None:
            return rows
        text = "".join(self._line(row) for row in upgraded)
        with self._lock:
            write_text_atomic(self.path, text)
        logger.info("upgraded %s to %s (users named by key)", self.path, LOG_FORMAT)
        return upgraded

    @staticmethod
    def _line(row: Row) -> str:
        return json.dumps(row, ensure_ascii=False, sort_keys=True, allow_nan=False) + "\n"

    def _read(self) -> list[Row]:
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        lines = data.splitlines(keepends=True)
        rows: list[Row] = []
        for n, line in enumerate(lines, 1):
            text = line.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                rows.append(json.loads(text))
            except json.JSONDecodeError as exc:
                if n < len(lines):  # rows are appended whole: only the last line can be torn
                    raise EvalLogError(f"{self.path}: line {n} is not JSON ({exc.msg}); fix or remove it") from None
                with self._lock, self.path.open("r+b") as handle:
                    handle.truncate(len(data) - len(line))
                return rows
        if data and not data.endswith(b"\n"):  # a whole row whose newline was lost: end it before appending
            with self._lock, self.path.open("ab") as handle:
                handle.write(b"\n")
        return rows

    def append(self, row: Row) -> None:
        line = self._line(row)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class StateCache:
    """One JSON document per user; each worker owns its users, so files are never written concurrently."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _path(self, user_id: str) -> Path:
        digest = hashlib.sha1(user_id.encode("utf-8")).hexdigest()[:10]
        return self.directory / f"{slugify_user_id(user_id)[:60] or 'user'}-{digest}.json"

    def load(self, user_id: str) -> dict[str, Any]:
        path = self._path(user_id)
        if not path.is_file():
            return {}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            # Written atomically, so this is foreign damage: say so, and recompute rather than fail the run.
            logger.warning(
                "ignoring the damaged state file %s (%s); its profile and personas are recomputed", path, exc
            )
            return {}
        return state if isinstance(state, dict) and state.get("user_id") == user_id else {}

    def save(self, user_id: str, state: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        ignore = self.directory / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# per-user profiles and personas derived from the data: never committed\n*\n")
        _atomic_write(self._path(user_id), json.dumps({**state, "user_id": user_id}, ensure_ascii=False, indent=1))


def write_text_atomic(path: Path, text: str) -> None:
    """Write a whole file so that readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, text)
