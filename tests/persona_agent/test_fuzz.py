"""Fuzzing (issue 37): generated ingest files (JSONL and CSV) through `persona-agent ingest`, and generated JSON
bodies through every service route that takes one, mixing ordinary values with the hostile ones of point 6
(lone surrogates, NUL, out-of-range times, "²" and 2**200 versions, lists and booleans as ids, NaN, deep
nesting, invalid UTF-8, over-long CSV fields). Properties: no 500 and no untyped exit (exit 0 or 2, and an exit
2 names a typed error); a rejection writes nothing. Real DuckDB, FAISS and MiniLM; the scripted LM.

Bounded: a fixed number of examples each (derandomized, so a run is reproducible), a deadline per example.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from urllib.parse import quote

import duckdb
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from persona_agent import cli
from persona_agent.core.config import Settings
from persona_agent.service import create_app
from persona_agent.workspace import Workspace
from tests.support import ADMIN_KEY, history, make_workspace

FUZZ = settings(
    max_examples=60,
    deadline=timedelta(seconds=20),
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
DEEP = "@DEEP@"  # replaced in the written text by nesting deeper than Python's parser can go
NESTING = "[" * 5_000 + "]" * 5_000

long_texts = st.sampled_from([2_001, 20_001, 140_000]).map(lambda n: "x" * n)  # over the limits, and csv's
hostile_texts = st.sampled_from(
    ["a\ud800", "\udfff", "nul\x00", "", "   ", "²", "🙂", "\u202e", "line\r\nbreak", "\ufeffbom"]
)
texts = st.text(max_size=20) | hostile_texts | long_texts
hostile_ids = st.sampled_from([["alice"], True, 42, -1, 1.5, None, "", "has space", "a\x00", "\ud800", "u" * 200, {}])
ids = st.sampled_from(["alice", "bob", "carol"]) | hostile_ids | st.text(max_size=12)
hostile_times = st.sampled_from(
    [1e20, -1e13, 2**200, "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-01:00", True, "yesterday", "1e20", "nan"]
)
times = (
    st.none()
    | hostile_times
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat())
)
versions = (
    st.sampled_from(["²", "٣", 2**200, -1, "-1", "live", "latest", "champion", 0, "0", 1.5, True, None])
    | st.text(max_size=20)
    | hostile_texts
)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | texts | st.just(DEEP)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=8
)
records = st.fixed_dictionaries(
    {"query": texts | json_values},
    optional={
        "user_id": ids,
        "response": texts,
        "task": texts,
        "created_at": times,
        "metadata": st.dictionaries(texts, json_values, max_size=3) | json_values,
        "mood": json_values,
    },
)

# What real files mostly hold: ordinary records. A generated file is a few of them, and maybe one hostile line.
plain = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=20)
ordinary = st.fixed_dictionaries(
    {"user_id": st.sampled_from(["alice", "bob"]), "query": plain.filter(str.strip)},
    optional={
        "response": plain,
        "created_at": st.integers(0, 4_000_000_000) | st.datetimes().map(lambda d: d.isoformat()),
        "metadata": st.dictionaries(plain, st.integers() | plain, max_size=2),
        "mood": plain,
    },
)


@st.composite
def files(draw: st.DrawFn, hostile: st.SearchStrategy) -> list[dict]:
    lines = draw(st.lists(ordinary, min_size=1, max_size=4))
    bad = draw(st.none() | hostile)
    if bad is not None:
        lines.insert(draw(st.integers(0, len(lines))), bad)
    return lines


def dump(value: object, escaped: bool) -> bytes:
    """JSON as a client may send it, NaN allowed and DEEP expanded: with non-ASCII escaped (a lone surrogate
    travels as \\ud800, valid JSON), or as UTF-8 with surrogates passed through (invalid UTF-8)."""
    text = json.dumps(value, ensure_ascii=escaped, allow_nan=True).replace(json.dumps(DEEP), NESTING)
    return text.encode("utf-8", "surrogatepass")


UNTYPED = re.compile(r"error: \w+(Error|Exception|Exit): ")


# -- ingest files --------------------------------------------------------------------------------------


@pytest.fixture
def ingest_cli(monkeypatch, embedder):
    monkeypatch.setattr(cli, "open_workspace", lambda settings, *, needs_lm: Workspace(settings, embedder=embedder))
    monkeypatch.setenv("COLUMNS", "2000")
    runner = CliRunner()

    def ingest(path) -> tuple[int, str, str, int]:
        """(exit code, stdout, stderr, rows added)."""
        before = rows()
        result = runner.invoke(cli.app, ["ingest", str(path)])
        return result.exit_code, result.stdout, " ".join(result.stderr.split()), rows() - before

    return ingest


def rows() -> int:
    path = Settings().resolved_db_path
    if not path.exists():
        return 0
    with duckdb.connect(str(path), read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM interactions").fetchall()[0][0])


def check_ingest(outcome: tuple[int, str, str, int]) -> None:
    code, out, err, added = outcome
    event(f"exit {code}")
    assert code in (0, 2), (code, err)
    if code == 2:
        assert added == 0, err  # nothing written on rejection
        assert not UNTYPED.search(err), err  # a typed error, not an exception's name
    else:
        assert re.search(rf"Stored {added} interactions", out), (out, added)


@FUZZ
@given(
    lines=files(records),
    escaped=st.booleans(),
    extra=st.sampled_from([b"", b"\xff\xfe\n", b"{not json\n"]),
)
def test_fuzz_jsonl_ingest(tmp_path, ingest_cli, lines, escaped, extra):
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes(b"".join(dump(line, escaped) + b"\n" for line in lines) + extra)
    check_ingest(ingest_cli(path))


COLUMNS = ("user_id", "query", "response", "task", "created_at", "mood")


@FUZZ
@given(lines=files(st.fixed_dictionaries(dict.fromkeys(COLUMNS, texts | ids | times))))
def test_fuzz_csv_ingest(tmp_path, ingest_cli, lines):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else str(v) for k, v in line.items()} for line in lines])
    path = tmp_path / "fuzz.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8", "surrogatepass"))
    check_ingest(ingest_cli(path))


# -- service bodies ------------------------------------------------------------------------------------

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}


@st.composite
def body(draw: st.DrawFn, ordinary: dict, hostile: dict) -> object:
    """A route's body: an ordinary one; or one with a field (or several) given a hostile value; or any JSON."""
    value = draw(st.fixed_dictionaries(ordinary))
    mode = draw(st.sampled_from(["ordinary", "hostile field", "hostile fields", "any JSON"]))
    if mode == "hostile field":
        field = draw(st.sampled_from(sorted(hostile)))
        value[field] = draw(hostile[field])
    elif mode == "hostile fields":
        value.update(draw(st.fixed_dictionaries({}, optional=hostile)))
    elif mode == "any JSON":
        value = draw(json_values)
    return value


ordinary_item = ordinary.map(lambda record: {k: v for k, v in record.items() if k not in ("user_id", "mood")})
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]), "content": plain})
ROUTES: list[tuple[str, str, st.SearchStrategy]] = [
    (
        "/v1/tokens",
        "post",
        body({"user_id": st.sampled_from(["alice", "dave"])}, {"user_id": ids, "ttl_seconds": st.integers() | times}),
    ),
    (
        "/v1/users/alice/interactions",
        "post",
        body({"items": st.lists(ordinary_item, min_size=1, max_size=3)}, {"items": st.lists(records) | json_values}),
    ),
    (
        "/v1/users/alice/respond",
        "post",
        body(
            {"request": plain, "record": st.booleans()},
            {
                "request": texts,
                "inputs": st.dictionaries(texts, texts, max_size=2) | json_values,
                "version": versions,
                "record": json_values,
            },
        ),
    ),
    (
        "/v1/users/alice/feedback",
        "post",
        body(
            {"request": plain, "response": plain},
            {"response": texts, "interaction_id": ids, "request": texts, "task": texts},
        ),
    ),
    (  # carol has no memory: a valid compile is refused (404) before any job runs
        "/v1/users/carol/compile",
        "post",
        body(
            {"n": st.integers(1, 5)},
            {"n": st.integers() | versions, "strategy": texts, "iterations": st.integers(), "max_seconds": times},
        ),
    ),
    (
        "/v1/users/alice/personas/rollback",
        "post",
        body({"to": st.just(0)}, {"to": versions, "expected_revision": st.integers()}),
    ),
    (
        "/v1/users/alice/personas/0/promote",
        "post",
        body({}, {"expected_revision": st.integers() | versions}),
    ),
    (
        "/v1/chat/completions",
        "post",
        body(
            {"model": st.just("persona-agent"), "user": st.just("alice"), "messages": st.lists(message, min_size=1)},
            {
                "model": texts,
                "user": ids,
                "stream": st.booleans() | json_values,
                "messages": st.lists(
                    st.fixed_dictionaries(
                        {"role": st.sampled_from(["user", "system", "robot"]) | texts},
                        optional={"content": texts | json_values},
                    ),
                    max_size=3,
                )
                | json_values,
            },
        ),
    ),
]


@pytest.fixture
def service(tracking_home, embedder):
    workspace = make_workspace(embedder, api_key=ADMIN_KEY, max_text_chars=2_000)
    for user in ("alice", "bob"):
        workspace.store.add(user, history())
    workspace.ensure_persona("alice")
    with TestClient(create_app(workspace=workspace), raise_server_exceptions=False) as client:
        yield client, workspace
    workspace.close()


def state(workspace: Workspace) -> tuple:
    registry = workspace.registry
    live = registry.live("alice")
    return workspace.store.count(), len(registry.history("alice")), live.version, live.revision, registry.users()


def check_response(response, workspace: Workspace, before: tuple, route: str) -> None:
    event(f"{route}: {response.status_code}")  # shown with --hypothesis-show-statistics
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert state(workspace) == before, response.text[:300]


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_fuzz_service_bodies(service, data):
    client, workspace = service
    path, method, bodies = data.draw(st.sampled_from(ROUTES))
    body = dump(data.draw(bodies), data.draw(st.booleans()))
    before = state(workspace)
    check_response(client.request(method, path, content=body, headers=HEADERS), workspace, before, path)


@FUZZ
@given(version=versions.map(str), other=versions.map(str))
def test_fuzz_service_versions_in_paths_and_queries(service, version, other):
    client, workspace = service
    before = state(workspace)
    quoted, b = (quote(v, safe="", errors="surrogatepass") for v in (version, other))  # may be invalid UTF-8
    for route, url in (
        ("personas/{version}", f"/v1/users/alice/personas/{quoted}"),
        ("personas/diff", f"/v1/users/alice/personas/diff?a={quoted}&b={b}"),
        ("jobs/{id}", f"/v1/jobs/{quoted}"),
    ):
        check_response(client.get(url, headers=HEADERS), workspace, before, route)
