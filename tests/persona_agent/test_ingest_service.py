"""The service's inputs (issue 37 point 6): each hostile value is a 422 naming the field, with nothing written,
where it was a 500 (or a 400 for deep bodies); the interactions route skips and counts repeats (point 5)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from persona_agent.service import create_app
from tests.support import ADMIN_KEY, history, make_workspace

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
P = "/v1/users/alice"
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def workspace(tracking_home, embedder):
    ws = make_workspace(embedder, api_key=ADMIN_KEY)
    ws.store.add("alice", history())
    ws.ensure_persona("alice")
    yield ws
    ws.close()


@pytest.fixture
def client(workspace):
    with TestClient(create_app(workspace=workspace), raise_server_exceptions=False) as c:
        yield c


def state(workspace) -> tuple:
    registry = workspace.registry
    return workspace.store.count(), len(registry.history("alice")), registry.live("alice").revision


def item(**fields: str) -> str:
    """An interactions body with one item whose fields are raw JSON texts."""
    return '{"items": [{"query": "q"' + "".join(f', "{k}": {v}' for k, v in fields.items()) + "}]}"


CASES = [
    ("created_at 1e20", "post", f"{P}/interactions", item(created_at="1e20"), ["body", "items", 0, "created_at"]),
    ("created_at -1e13", "post", f"{P}/interactions", item(created_at="-1e13"), ["body", "items", 0, "created_at"]),
    (
        "created_at year 0",
        "post",
        f"{P}/interactions",
        item(created_at='"0001-01-01T00:00:00+05:00"'),
        ["body", "items", 0, "created_at"],
    ),
    (
        "lone surrogate",
        "post",
        f"{P}/interactions",
        '{"items": [{"query": "a\\ud800"}]}',
        ["body", "items", 0, "query"],
    ),
    ("surrogate key", "post", f"{P}/interactions", item(metadata='{"\\ud800": 1}'), None),
    ("NUL", "post", f"{P}/interactions", '{"items": [{"query": "a\\u0000"}]}', ["body", "items", 0, "query"]),
    ("deep metadata", "post", f"{P}/interactions", item(metadata='{"x": ' + DEEP + "}"), ["body"]),
    ("deep body", "post", f"{P}/respond", DEEP, ["body"]),
    ("NaN", "post", f"{P}/interactions", item(metadata='{"x": NaN}'), ["body"]),
    ("1e400", "post", "/v1/tokens", '{"user_id": "alice", "ttl_seconds": 1e400}', ["body"]),
    ("version ²", "get", f"{P}/personas/%C2%B2", None, ["path", "version"]),
    ("version 2**200", "get", f"{P}/personas/{2**200}", None, ["path", "version"]),
    ("diff ²", "get", f"{P}/personas/diff?a=%C2%B2", None, ["query", "a"]),
    ("promote ²", "post", f"{P}/personas/%C2%B2/promote", None, ["path", "version"]),
    (
        "respond version 2**200",
        "post",
        f"{P}/respond",
        f'{{"request": "hi", "version": {2**200}}}',
        ["body", "version"],
    ),
    ("respond version ²", "post", f"{P}/respond", '{"request": "hi", "version": "²"}', ["body", "version"]),
    ("rollback to 2**200", "post", f"{P}/personas/rollback", f'{{"to": {2**200}}}', ["body", "to"]),
    ("respond surrogate", "post", f"{P}/respond", '{"request": "hi\\ud800", "record": true}', ["body", "request"]),
    ("feedback surrogate", "post", f"{P}/feedback", '{"request": "q", "response": "\\udfff"}', ["body", "response"]),
    ("feedback id NUL", "post", f"{P}/feedback", '{"interaction_id": "m\\u0000", "response": "x"}', None),
    ("token surrogate", "post", "/v1/tokens", '{"user_id": "\\ud800"}', ["body", "user_id"]),
    (
        "chat surrogate",
        "post",
        "/v1/chat/completions",
        '{"model": "m", "user": "alice", "messages": [{"role": "user", "content": "hi\\ud800"}]}',
        ["body", "messages", 0, "content"],
    ),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "loc"), CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_422_naming_the_field_and_writes_nothing(client, workspace, name, method, path, body, loc):
    before = state(workspace)
    response = client.request(method, path, content=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"][0]
    assert loc is None or detail["loc"] == loc, detail["loc"]
    assert state(workspace) == before


def test_interactions_report_what_they_skipped(client, workspace):
    items = [{"query": "hello"}, {"query": "world", "created_at": 1e9}, {"query": "hello"}]
    first = client.post(f"{P}/interactions", json={"items": items}, headers=ADMIN).json()
    assert (first["added"], first["skipped"]) == (2, 1) and first["ids"][0] == first["ids"][2]
    again = client.post(f"{P}/interactions", json={"items": items}, headers=ADMIN).json()
    assert (again["added"], again["skipped"]) == (0, 3) and again["ids"] == first["ids"]
    assert workspace.store.count("alice") == len(history()) + 2
    recorded = [
        client.post(f"{P}/feedback", json={"request": "same", "response": "same"}, headers=ADMIN).json()["id"]
        for _ in range(2)
    ]
    assert recorded[0] != recorded[1]  # feedback is recorded with its time: two rows
    assert json.loads(client.get(f"{P}/personas", headers=ADMIN).text)["user_id"] == "alice"
