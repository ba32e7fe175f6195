"""What every builder shares: turning (user, item, time) rows into time-ordered users with queries.

Per user, items are sorted by (timestamp, item id); `order` is the dense rank of the timestamp, so items
with the same timestamp are simultaneous and never see each other. The latest `queries_per_user` items
are the queries; a user is kept only if at least `min_profile` items lie strictly before the first query
(so the alignment batch of n = `min_profile` is full). Everything is deterministic: no sampling here.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError, DatasetFormatError, InvalidInputError
from persona_agent.core.lamp import require_file
from persona_agent.core.records import BuildReport, EvalDataset, EvalUser, Item, count_at_least
from persona_agent.core.tasks import TaskSpec

DEFAULT_QUERIES_PER_USER = 3
DEFAULT_MIN_PROFILE = 3  # = the paper's alignment batch size n


def data_path(data_dir: Path | str | None) -> Path:
    """The real-data folder: the one given, else the `data_dir` setting (`PERSONA_AGENT_DATA_DIR`). A wheel knows no
    data path, so with neither this is a `ConfigError` saying how to name one."""
    if data_dir is not None:
        return Path(data_dir)
    configured = Settings().data_dir
    if configured is None:
        raise ConfigError("name the data folder: pass data_dir= (--data DIR) or set PERSONA_AGENT_DATA_DIR")
    return configured


@dataclass(frozen=True)
class RawItem:
    """One usable interaction as a builder extracted it, before users are assembled."""

    user_id: str
    item_id: str
    input: str
    output: str
    timestamp: datetime
    fields: dict[str, str] = field(default_factory=dict)


def slugify_user_id(name: str) -> str:
    """Lower-case ASCII with runs of anything else turned into '-' ("Dánica Coto" -> "danica-coto")."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")


def csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """A CSV file's records with the row numbers its errors name (row 1 is the header), once the file is found
    and its header holds `columns`."""
    with require_file(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetFormatError(path, "header", missing[0], reader.fieldnames, "column missing")
        yield from enumerate(reader, start=2)


def check_split(queries_per_user: int, min_profile: int) -> None:
    if queries_per_user < 1:
        raise InvalidInputError("queries_per_user", queries_per_user, "must be >= 1")
    if min_profile < 0:
        raise InvalidInputError("min_profile", min_profile, "must be >= 0")


def _timeline(rows: list[RawItem]) -> list[Item]:
    """A user's time-sorted rows as items; `order` is the dense rank of the timestamp (ties simultaneous)."""
    ranks = {ts: rank for rank, ts in enumerate(sorted({r.timestamp for r in rows}))}
    return [
        Item(
            id=r.item_id,
            input=r.input,
            output=r.output,
            order=ranks[r.timestamp],
            timestamp=r.timestamp,
            fields=r.fields,
        )
        for r in rows
    ]


def assemble_dataset(
    task: TaskSpec,
    source: str,
    items: Iterable[RawItem],
    *,
    records_read: int,
    records_dropped: Counter[str],
    queries_per_user: int = DEFAULT_QUERIES_PER_USER,
    min_profile: int = DEFAULT_MIN_PROFILE,
) -> EvalDataset:
    """Group rows by user, order them in time, split off the queries and report every count."""
    check_split(queries_per_user, min_profile)
    by_user: dict[str, list[RawItem]] = defaultdict(list)
    for raw in items:
        by_user[raw.user_id].append(raw)

    users: list[EvalUser] = []
    skipped: Counter[str] = Counter()
    for user_id in sorted(by_user):
        rows = sorted(by_user[user_id], key=lambda r: (r.timestamp, r.item_id))
        if len(rows) < queries_per_user + min_profile:
            skipped["too_few_items"] += 1
            continue
        timeline = _timeline(rows)
        user = EvalUser(
            user_id=user_id,
            task=task.name,
            history=tuple(timeline[:-queries_per_user]),
            queries=tuple(timeline[-queries_per_user:]),
        )
        if len(user.profile_before(user.queries[0])) < min_profile:
            # The last items share one timestamp, so too little is strictly earlier than the first query.
            skipped["too_few_items_before_first_query"] += 1
            continue
        users.append(user)

    sizes = [len(rows) for rows in by_user.values()]
    report = BuildReport(
        task=task.name,
        source=source,
        records_read=records_read,
        records_dropped=dict(sorted(records_dropped.items())),
        users_seen=len(by_user),
        users_kept=len(users),
        users_skipped=dict(sorted(skipped.items())),
        items=sum(u.n_items for u in users),
        queries=sum(len(u.queries) for u in users),
        users_with_at_least=count_at_least(sizes),
        kept_users_with_at_least=count_at_least([u.n_items for u in users]),
    )
    return EvalDataset(task=task.name, users=tuple(users), report=report)


Extract = Callable[[Path], tuple[list[RawItem], int, Counter[str]]]
"""Reads a source's files under the data folder: its usable rows, the records read, drop counts by reason."""


@dataclass(frozen=True)
class LampBuilder:
    """A LaMP task's dataset from one source, called as `build(data_dir, queries_per_user=, min_profile=)`.

    Every builder does the same around its own reading (`extract`): check the split before any file is read,
    resolve the data folder (`data_path`), then assemble the users (`assemble_dataset`)."""

    task: TaskSpec
    source: str  # named in the build report
    extract: Extract

    def __call__(
        self,
        data_dir: Path | str | None = None,
        *,
        queries_per_user: int = DEFAULT_QUERIES_PER_USER,
        min_profile: int = DEFAULT_MIN_PROFILE,
    ) -> EvalDataset:
        check_split(queries_per_user, min_profile)
        rows, read, dropped = self.extract(data_path(data_dir))
        return assemble_dataset(
            self.task,
            self.source,
            rows,
            records_read=read,
            records_dropped=dropped,
            queries_per_user=queries_per_user,
            min_profile=min_profile,
        )
