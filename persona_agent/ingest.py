"""Reading interaction files for `persona-agent ingest`: JSONL, CSV, and LaMP / OPPU files.

Every record is parsed and validated (by `stores.validation`, the store's own checks) before anything is written,
so a bad line fails the whole file with a message naming the file, the line or record and the field, and the
store is left unchanged. The store then writes the file in one transaction (`MemoryStore.ingest`).

- JSONL: one object per line with `query`, optional `response`, `task`, `metadata`, `created_at` (ISO time or
  Unix seconds) and a user column (default `user_id`: a string, or a JSON integer taken as its digits), unless
  `user` is given for the whole file.
- CSV: a header row with the same columns; any other column goes into `metadata`.
- LaMP questions / OPPU user files (with `task`): each user's profile items become their history (the
  questions themselves are evaluation targets and are not ingested). Items without a date are spaced one
  second apart in file order, so time cut-offs keep their order.
Files are UTF-8; a line that is not names its number.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from persona_agent.core.errors import DataFileNotFoundError, DatasetFormatError, InvalidInputError
from persona_agent.stores.records import NewInteraction
from persona_agent.stores.validation import (
    metadata_json,
    parse_json,
    to_utc_naive,
    validate_text,
    validate_user_id,
)

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


def _owner(value: object) -> object:
    """A record's user as given: JSON integers are taken as their digits; anything but a string is then refused."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _record(path: Path, where: str, raw: dict[str, Any], user: str | None, user_column: str, max_chars: int) -> Record:
    data = dict(raw)
    owner = user if user is not None else _owner(data.pop(user_column, None))
    if user is not None:
        data.pop(user_column, None)
    if owner in (None, ""):
        raise DatasetFormatError(path, where, user_column, owner, "missing: give a user column or --user")
    try:
        owner = validate_user_id(owner, user_column)
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
        if item.task is not None:
            validate_text(item.task, "task", 128)
        if item.created_at is not None:
            to_utc_naive(item.created_at, "created_at")
        metadata_json(item.metadata, "metadata")
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "(record)"
        raise DatasetFormatError(path, where, field, error.get("input"), error["msg"]) from None
    except InvalidInputError as exc:
        raise DatasetFormatError(path, where, exc.field, exc.value, exc.reason) from None
    return owner, item


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """The file's lines (with their line ends, as `csv` wants them) and numbers, decoded as UTF-8 one by one."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                shown = raw[max(exc.start - 20, 0) : exc.end + 20]
                raise DatasetFormatError(
                    path, f"line {number}", "(encoding)", shown, f"not UTF-8 ({exc.reason} at column {exc.start + 1})"
                ) from None


def _jsonl(path: Path, user: str | None, user_column: str, max_chars: int) -> Iterator[Record]:
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            raw = parse_json(line, "")
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(path, where, "(json)", line[:60], f"not JSON: {exc.msg}") from None
        except InvalidInputError as exc:
            raise DatasetFormatError(path, where, exc.field, exc.value, exc.reason) from None
        if not isinstance(raw, dict):
            raise DatasetFormatError(path, where, "(record)", raw, "must be a JSON object")
        yield _record(path, where, raw, user, user_column, max_chars)


def _csv(path: Path, user: str | None, user_column: str, max_chars: int) -> Iterator[Record]:
    reader = csv.DictReader(line for _, line in _lines(path))
    try:
        if reader.fieldnames is None or "query" not in reader.fieldnames:
            raise DatasetFormatError(path, "header", "query", reader.fieldnames, "the header needs a 'query' column")
        for row in reader:
            where = f"line {reader.line_num}"
            if None in row:
                raise DatasetFormatError(path, where, "(columns)", row[None], "more cells than columns")
            raw: dict[str, Any] = dict(row)
            created = raw.get("created_at")
            if created:
                try:
                    raw["created_at"] = float(created)
                except ValueError:
                    pass  # an ISO time, parsed by the record model
            yield _record(path, where, raw, user, user_column, max_chars)
    except csv.Error as exc:
        limit = csv.field_size_limit()
        raise DatasetFormatError(
            path,
            f"line {reader.line_num + 1}",
            "(csv)",
            None,
            f"{exc} (the CSV reader reads fields up to {limit} characters; the store keeps texts up to {max_chars})",
        ) from None


def _lamp(path: Path, fmt: FileFormat, task: str | None, outputs: Path | None, max_chars: int) -> Iterator[Record]:
    from persona_agent.core.lamp import load_lamp, load_oppu
    from persona_agent.core.tasks import get_task

    if task is None:
        raise InvalidInputError(
            "task", None, "LaMP and OPPU files need --task (LaMP-1, LaMP-2N, LaMP-2M, LaMP-3, LaMP-4)"
        )
    spec = get_task(task)
    try:
        dataset = (load_lamp if fmt == "lamp" else load_oppu)(path, outputs, task=spec)
    except UnicodeDecodeError:
        for source in (path, outputs):  # find the line (the loader reads through a text stream)
            for _ in _lines(source) if source is not None else ():
                pass
        raise
    except RecursionError:
        raise DatasetFormatError(path, "-", "(json)", None, "nested deeper than JSON parsing allows") from None
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
