"""Loaders (and writers) for LaMP's official files and OPPU's per-user files.

Formats, as the reference code reads them:
- LaMP questions (`LaMP-Benchmark/LaMP`, `LaMP/data/datasets.py`): a JSON list of
  `{"id", "input", "profile": [...]}`; outputs (`eval/evaluation.py`): `{"task": "LaMP_3", "golds":
  [{"id", "output"}]}`. Profile items carry task fields (`LaMP/prompts/prompts.py`): LaMP-1 title,
  abstract; LaMP-2N text, title, category; LaMP-2M description, tag; LaMP-3 text, score; LaMP-4 text,
  title; most also an `id` and a `date` ("YYYY-MM-DD", which LaMP's recency retriever sorts on).
- OPPU (`TamSiuhin/OPPU`, `OPPU.py` / `task_LoRA.py`): `data/<task>/user_top_100_history.json` is a JSON
  list of users `{"profile": [...LaMP profile items...], "query": [{"id", "input"}, ...]}` (some copies add
  `user_id`); golds are in `user_top_100_history_label.json` in the LaMP outputs format, or inline as
  `query[i]["gold"]` (OPPU's `user_others.json`).

Each LaMP question becomes one user whose only query is the question; each OPPU user keeps its queries.
Profile items are ordered by date when every one has a parseable date, else in file order. Queries come
after the whole profile and, in OPPU, at the same time as each other: OPPU answers every query from the
profile alone, so one query never sees another's gold. A query's `input` is the content after the task's
marker ("article:", "review:", ...), the way LaMP's retrievers cut it; the full question stays in
`fields["question"]`. Anything malformed raises `DatasetFormatError` naming file, record and field.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from persona_agent.core.errors import DataFileNotFoundError, DatasetFormatError
from persona_agent.core.records import BuildReport, EvalDataset, EvalUser, Item, count_at_least
from persona_agent.core.tasks import TaskSpec, get_task

# The `task` values an outputs file may carry for each of our tasks (LaMP's first release called the
# news task "LaMP_2"; its later release gave that id to movies).
_TASK_IDS: dict[str, tuple[str, ...]] = {
    "LaMP-1": ("LaMP_1",),
    "LaMP-2N": ("LaMP_2N", "LaMP_2"),
    "LaMP-2M": ("LaMP_2M", "LaMP_2"),
    "LaMP-3": ("LaMP_3",),
    "LaMP-4": ("LaMP_4",),
}


def require_file(path: Path) -> Path:
    """`path` if it is a file, else a `DataFileNotFoundError` that says to pass the data folder."""
    if not path.is_file():
        raise DataFileNotFoundError(path, "pass data_dir= (or --data) naming the folder that holds the data files")
    return path


def _read_json(path: Path) -> Any:
    require_file(path)
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(path, "-", "(json)", f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from exc


def _text(path: Path, record: str, field: str, value: Any, *, required: bool = True) -> str:
    """A string field; numbers (ids, scores) become their text, anything else is malformed."""
    if value is None and not required:
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DatasetFormatError(path, record, field, value, "missing or not a string")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _label(task: TaskSpec, path: Path, record: str, field: str, value: Any) -> str:
    text = _text(path, record, field, value).strip()
    if task.is_labelled and text not in task.labels:
        raise DatasetFormatError(path, record, field, value, f"not one of the {task.name} labels {list(task.labels)}")
    return text


def parse_date(value: Any) -> datetime | None:
    """A LaMP `date` as UTC datetime: "YYYY-MM-DD", "YYYY-MM", "YYYY", an ISO datetime, or Unix seconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        if 1000 <= value <= 9999:
            return datetime(int(value), 1, 1, tzinfo=UTC)
        return datetime.fromtimestamp(value, tz=UTC)
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        pass
    parts = text.split("-")
    if 1 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
        numbers = [int(p) for p in parts] + [1] * (3 - len(parts))
        try:
            day = date(numbers[0], numbers[1], numbers[2])
        except ValueError:
            return None
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return None


def _profile(task: TaskSpec, path: Path, record: str, raw: Any) -> list[Item]:
    """Profile items in time order (by date when all have one, else file order), `order` 0.."""
    if not isinstance(raw, list):
        raise DatasetFormatError(path, record, "profile", type(raw).__name__, "must be a list of items")
    parsed: list[tuple[Item, datetime | None]] = []
    for j, entry in enumerate(raw):
        where = f"profile[{j}]"
        if not isinstance(entry, dict):
            raise DatasetFormatError(path, record, where, entry, "must be an object")
        for key in task.required_profile_fields:
            if key not in entry:
                raise DatasetFormatError(path, record, f"{where}.{key}", None, f"missing ({task.name} profile field)")
        fields = {
            k: _text(path, record, f"{where}.{k}", v)
            for k, v in entry.items()
            if k not in ("id", task.input_field, task.output_field)
            and isinstance(v, str | int | float)
            and not isinstance(v, bool)
        }
        when = parse_date(entry["date"]) if "date" in entry else None
        if "date" in entry and when is None:
            raise DatasetFormatError(path, record, f"{where}.date", entry["date"], "not a date")
        # Profile outputs are history, not scored, so they are kept as written (not checked against labels).
        item = Item(
            id=_text(path, record, f"{where}.id", entry.get("id", f"profile-{j}")),
            input=_text(path, record, f"{where}.{task.input_field}", entry.get(task.input_field)),
            output=_text(path, record, f"{where}.{task.output_field}", entry.get(task.output_field), required=False),
            order=j,
            fields=fields,
        )
        parsed.append((item, when))
    if parsed and all(when is not None for _, when in parsed):
        ranked = sorted(parsed, key=lambda pair: pair[1])  # stable: same-date items keep file order
        ranks = {when: rank for rank, when in enumerate(sorted({when for _, when in parsed}))}
        return [item.model_copy(update={"order": ranks[when], "timestamp": when}) for item, when in ranked]
    return [item for item, _ in parsed]


def _golds(path: Path | None, task: TaskSpec) -> dict[str, Any]:
    if path is None:
        return {}
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DatasetFormatError(path, "-", "(root)", type(data).__name__, 'must be {"task": ..., "golds": [...]}')
    if data.get("task") not in _TASK_IDS[task.name]:
        raise DatasetFormatError(path, "-", "task", data.get("task"), f"expected {' or '.join(_TASK_IDS[task.name])}")
    golds = data.get("golds")
    if not isinstance(golds, list):
        raise DatasetFormatError(path, "-", "golds", type(golds).__name__, "must be a list")
    out: dict[str, Any] = {}
    for i, entry in enumerate(golds):
        if not isinstance(entry, dict) or "id" not in entry or "output" not in entry:
            raise DatasetFormatError(path, f"#{i}", "golds[].id/output", entry, "each gold needs id and output")
        out[_text(path, f"#{i}", "id", entry["id"])] = entry["output"]
    return out


def _query(
    task: TaskSpec, path: Path, record: str, raw: Any, golds: dict[str, Any], golds_path: Path | None, order: int
) -> Item:
    if not isinstance(raw, dict):
        raise DatasetFormatError(path, record, "query", raw, "must be an object")
    qid = _text(path, record, "id", raw.get("id"))
    question = _text(path, record, "input", raw.get("input"))
    if qid in golds:
        gold, source = golds[qid], golds_path or path
    else:
        key = next((k for k in ("output", "gold") if k in raw), None)
        if key is None:
            where = f"no gold for id {qid!r} in {golds_path}" if golds_path else "no output/gold and no outputs file"
            raise DatasetFormatError(path, record, "output", None, where)
        gold, source = raw[key], path
    return Item(
        id=qid,
        input=task.extract_content(question),
        output=_label(task, Path(source), f"id {qid!r}", "output", gold),
        order=order,
        fields={"question": question},
    )


def _report(task: TaskSpec, source: str, read: int, users: list[EvalUser]) -> BuildReport:
    return BuildReport(
        task=task.name,
        source=source,
        records_read=read,
        users_seen=len(users),
        users_kept=len(users),
        items=sum(u.n_items for u in users),
        queries=sum(len(u.queries) for u in users),
        users_with_at_least=count_at_least([u.n_items for u in users]),
        kept_users_with_at_least=count_at_least([u.n_items for u in users]),
    )


def load_lamp(
    questions_path: Path | str, outputs_path: Path | str | None = None, *, task: str | TaskSpec
) -> EvalDataset:
    """One user per LaMP question: its profile as history, the question as the single query.

    Golds come from `outputs_path` (`{"task", "golds": [{"id", "output"}]}`) or, failing that, an
    `output` key on the question itself.
    """
    spec = get_task(task)
    qpath = Path(questions_path)
    opath = Path(outputs_path) if outputs_path is not None else None
    data = _read_json(qpath)
    if not isinstance(data, list):
        raise DatasetFormatError(qpath, "-", "(root)", type(data).__name__, "must be a list of questions")
    golds = _golds(opath, spec)
    users: list[EvalUser] = []
    for i, raw in enumerate(data):
        record = f"#{i} (id {raw.get('id')!r})" if isinstance(raw, dict) else f"#{i}"
        if not isinstance(raw, dict):
            raise DatasetFormatError(qpath, record, "(question)", raw, "must be an object")
        history = _profile(spec, qpath, record, raw.get("profile"))
        query = _query(spec, qpath, record, raw, golds, opath, order=max((h.order for h in history), default=-1) + 1)
        users.append(_user(qpath, record, query.id, spec, history, (query,)))
    _check_unique(qpath, users)
    return EvalDataset(task=spec.name, users=tuple(users), report=_report(spec, f"LaMP {qpath.name}", len(data), users))


def load_oppu(path: Path | str, golds_path: Path | str | None = None, *, task: str | TaskSpec) -> EvalDataset:
    """OPPU's per-user file: each user's profile as history and its `query` list as simultaneous queries."""
    spec = get_task(task)
    upath = Path(path)
    gpath = Path(golds_path) if golds_path is not None else None
    data = _read_json(upath)
    if not isinstance(data, list):
        raise DatasetFormatError(upath, "-", "(root)", type(data).__name__, "must be a list of users")
    golds = _golds(gpath, spec)
    users: list[EvalUser] = []
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            raise DatasetFormatError(upath, f"#{i}", "(user)", raw, "must be an object")
        user_id = _text(upath, f"#{i}", "user_id", raw.get("user_id", str(i)))
        record = f"#{i} (user {user_id!r})"
        history = _profile(spec, upath, record, raw.get("profile"))
        queries_raw = raw.get("query")
        if not isinstance(queries_raw, list) or not queries_raw:
            raise DatasetFormatError(upath, record, "query", queries_raw, "must be a non-empty list")
        order = max((h.order for h in history), default=-1) + 1
        queries = tuple(
            _query(spec, upath, f"{record} query[{k}]", q, golds, gpath, order) for k, q in enumerate(queries_raw)
        )
        users.append(_user(upath, record, user_id, spec, history, queries))
    _check_unique(upath, users)
    return EvalDataset(task=spec.name, users=tuple(users), report=_report(spec, f"OPPU {upath.name}", len(data), users))


def _user(
    path: Path, record: str, user_id: str, task: TaskSpec, history: list[Item], queries: tuple[Item, ...]
) -> EvalUser:
    try:
        return EvalUser(user_id=user_id, task=task.name, history=tuple(history), queries=queries)
    except ValidationError as exc:  # e.g. a profile item reusing the query's id
        error = exc.errors()[0]
        raise DatasetFormatError(path, record, "id", error.get("input"), str(error.get("msg"))) from exc


def _check_unique(path: Path, users: list[EvalUser]) -> None:
    seen: Counter[str] = Counter(u.user_id for u in users)
    dupes = [uid for uid, n in seen.items() if n > 1]
    if dupes:
        raise DatasetFormatError(path, "-", "id", dupes[0], "user/question ids must be unique")


def _profile_entry(task: TaskSpec, item: Item) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": item.id}
    entry.update({k: v for k, v in item.fields.items() if k != "question"})
    entry[task.input_field] = item.input
    entry[task.output_field] = item.output
    if item.timestamp is not None and "date" not in entry:
        ts = item.timestamp
        entry["date"] = (
            ts.date().isoformat() if ts == datetime(ts.year, ts.month, ts.day, tzinfo=ts.tzinfo) else ts.isoformat()
        )
    return entry


def to_lamp(dataset: EvalDataset) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(questions, outputs) in LaMP's format: one question per query, its profile = what precedes it."""
    task = get_task(dataset.task)
    questions: list[dict[str, Any]] = []
    golds: list[dict[str, str]] = []
    for user in dataset.users:
        for query in user.queries:
            questions.append(
                {
                    "id": query.id,
                    "input": query.fields.get("question") or task.format_question(query.input),
                    "profile": [_profile_entry(task, item) for item in user.profile_before(query)],
                }
            )
            golds.append({"id": query.id, "output": query.output})
    return questions, {"task": task.lamp_id, "golds": golds}


def write_lamp(dataset: EvalDataset, questions_path: Path | str, outputs_path: Path | str) -> None:
    """Write `to_lamp(dataset)` as LaMP's two JSON files, so LaMP/OPPU tooling can read our data."""
    questions, outputs = to_lamp(dataset)
    Path(questions_path).write_text(json.dumps(questions, ensure_ascii=False, indent=1), encoding="utf-8")
    Path(outputs_path).write_text(json.dumps(outputs, ensure_ascii=False, indent=1), encoding="utf-8")
