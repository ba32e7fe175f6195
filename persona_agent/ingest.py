"""Reading interaction files for `persona-agent ingest`: JSONL, CSV, and LaMP / OPPU files.

Every record is parsed and validated before anything is written, so a bad line fails the whole file with a
message naming the file, the record and the field, and the store is left unchanged.

- JSONL: one object per line with `query`, optional `response`, `task`, `metadata`, `created_at` (ISO time or
  Unix seconds) and a user column (default `user_id`), unless `user` is given for the whole file.
- CSV: a header row with the same columns; any other column goes into `metadata`.
- LaMP questions / OPPU user files (with `task`): each user's profile items become their history (the
  questions themselves are evaluation targets and are not ingested). Items without a date are spaced one
  second apart in file order, so time cut-offs keep their order.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from persona_agent.errors import DataFileNotFoundError, DatasetFormatError, InvalidInputError
from persona_agent.stores.records import NewInteraction
from persona_agent.stores.validation import to_utc_naive, validate_text, validate_user_id

FileFormat = Literal["jsonl", "csv", "lamp", "oppu"]
Record = tuple[str, NewInteraction]
_KNOWN = {"query", "response", "task", "metadata", "created_at"}
_UNDATED_BASE = datetime(2000, 1, 1)


def detect_format(path: Path, fmt: str | None) -> FileFormat:
    if fmt is not None:
        if fmt not in ("jsonl", "csv", "lamp", "oppu"):
            raise InvalidInputError("format", fmt, "must be one of jsonl, csv, lamp, oppu")
        return fmt  # type: ignore[return-value]
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise InvalidInputError("format", None, f"cannot tell the format of {path.name}: pass --format jsonl|csv|lamp|oppu")


def _record(path: Path, where: str, raw: dict[str, Any], user: str | None, user_column: str, max_chars: int) -> Record:
    data = dict(raw)
    owner = user if user is not None else data.pop(user_column, None)
    if user is not None:
        data.pop(user_column, None)
    if owner in (None, ""):
        raise DatasetFormatError(path, where, user_column, owner, "missing: give a user column or --user")
    try:
        owner = validate_user_id(str(owner), user_column)
    except InvalidInputError as exc:
        raise DatasetFormatError(path, where, user_column, owner, exc.reason) from None
    extra = {k: v for k, v in data.items() if k not in _KNOWN}
    fields = {k: v for k, v in data.items() if k in _KNOWN and v not in (None, "")}
    if extra:
        fields["metadata"] = {**extra, **(fields.get("metadata") or {})}
    try:
        item = NewInteraction.model_validate(fields)
        validate_text(item.query, "query", max_chars)
        validate_text(item.response, "response", max_chars, allow_empty=True)
        if item.created_at is not None:
            to_utc_naive(item.created_at, "created_at")
        json.dumps(item.metadata, allow_nan=False)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "(record)"
        raise DatasetFormatError(path, where, field, error.get("input"), error["msg"]) from None
    except InvalidInputError as exc:
        raise DatasetFormatError(path, where, exc.field, exc.value, exc.reason) from None
    except (TypeError, ValueError) as exc:
        raise DatasetFormatError(path, where, "metadata", None, f"not JSON-serialisable ({exc})") from None
    return owner, item


def _jsonl(path: Path, user: str | None, user_column: str, max_chars: int) -> Iterator[Record]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetFormatError(path, f"line {number}", "(json)", line[:60], f"not JSON: {exc.msg}") from None
            if not isinstance(raw, dict):
                raise DatasetFormatError(path, f"line {number}", "(record)", raw, "must be a JSON object")
            yield _record(path, f"line {number}", raw, user, user_column, max_chars)


def _csv(path: Path, user: str | None, user_column: str, max_chars: int) -> Iterator[Record]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or "query" not in reader.fieldnames:
            raise DatasetFormatError(path, "header", "query", reader.fieldnames, "the header needs a 'query' column")
        for number, row in enumerate(reader, 2):
            if None in row:
                raise DatasetFormatError(path, f"line {number}", "(columns)", row[None], "more cells than columns")
            raw: dict[str, Any] = dict(row)
            created = raw.get("created_at")
            if created:
                try:
                    raw["created_at"] = float(created)
                except ValueError:
                    pass  # an ISO time, parsed by the record model
            yield _record(path, f"line {number}", raw, user, user_column, max_chars)


def _lamp(path: Path, fmt: FileFormat, task: str | None, outputs: Path | None, max_chars: int) -> Iterator[Record]:
    from persona_agent.evaluation import get_task, load_lamp, load_oppu

    if task is None:
        raise InvalidInputError(
            "task", None, "LaMP and OPPU files need --task (LaMP-1, LaMP-2N, LaMP-2M, LaMP-3, LaMP-4)"
        )
    spec = get_task(task)
    dataset = (load_lamp if fmt == "lamp" else load_oppu)(path, outputs, task=spec)
    for user in dataset.users:
        owner = validate_user_id(user.user_id)
        for item in user.history:
            when = item.timestamp or (_UNDATED_BASE + timedelta(seconds=item.order))
            where = f"user {owner!r} item {item.id!r}"
            raw = {"query": item.input, "response": item.output, "task": spec.name, "created_at": when}
            raw["metadata"] = {"source": fmt, "item_id": item.id}
            yield _record(path, where, raw, owner, "user_id", max_chars)


def read_records(
    path: str | Path,
    *,
    fmt: str | None = None,
    user: str | None = None,
    user_column: str = "user_id",
    task: str | None = None,
    outputs: str | Path | None = None,
    max_chars: int = 20_000,
) -> list[Record]:
    """Every record of the file, validated; raises on the first bad one (nothing is written by reading)."""
    path = Path(path)
    if not path.is_file():
        raise DataFileNotFoundError(path, "give an existing JSONL, CSV, LaMP or OPPU file")
    kind = detect_format(path, fmt)
    if user is not None:
        user = validate_user_id(user, "user")
        if kind in ("lamp", "oppu"):
            raise InvalidInputError("user", user, "LaMP and OPPU files name their users: drop --user")
    if kind == "jsonl":
        return list(_jsonl(path, user, user_column, max_chars))
    if kind == "csv":
        return list(_csv(path, user, user_column, max_chars))
    return list(_lamp(path, kind, task, Path(outputs) if outputs else None, max_chars))
