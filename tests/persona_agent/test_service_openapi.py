"""The OpenAPI schema documents every route's response: each operation's success response names a schema (a
`$ref` to a model in `components`), so a client generated from `/openapi.json` knows every body it gets back."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from persona_agent.core.config import Settings
from persona_agent.service import create_app
from persona_agent.service.responses import ChatCompletion, Readiness
from tests.persona_agent.test_service import service_workspace
from tests.support import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
METHODS = ("get", "post", "put", "patch", "delete")
U = "/v1/users/{user_id}"
ROUTES = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/tokens"),
    ("POST", f"{U}/tokens/revoke"),
    ("POST", f"{U}/interactions"),
    ("POST", f"{U}/respond"),
    ("POST", f"{U}/feedback"),
    ("POST", f"{U}/compile"),
    ("GET", "/v1/jobs/{job_id}"),
    ("GET", f"{U}/personas"),
    ("GET", f"{U}/personas/diff"),
    ("GET", f"{U}/personas/{{version}}"),
    ("POST", f"{U}/personas/{{version}}/promote"),
    ("POST", f"{U}/personas/rollback"),
    ("DELETE", U),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
}


@pytest.fixture(scope="module")
def schema() -> dict:
    client = TestClient(create_app(Settings(api_key=ADMIN_KEY)))  # no lifespan: the schema needs no workspace
    assert client.get("/openapi.json").status_code == 401
    response = client.get("/openapi.json", headers=ADMIN)
    assert response.status_code == 200
    return response.json()


def operations(schema: dict) -> list[tuple[str, str, dict]]:
    return [(m, path, op) for path, item in schema["paths"].items() for m, op in item.items() if m in METHODS]


def test_every_route_is_in_the_schema(schema):
    documented = {(m.upper(), path) for m, path, _ in operations(schema)}
    assert documented == ROUTES


def test_every_route_names_its_response_schema(schema):
    components = schema.get("components", {}).get("schemas", {})
    unnamed = []
    for method, path, op in operations(schema):
        success = [op["responses"][code] for code in op["responses"] if code.startswith("2")]
        refs = [r.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "") for r in success]
        names = [ref.removeprefix("#/components/schemas/") for ref in refs if ref]
        if len(names) != len(success) or not success or not all(name in components for name in names):
            unnamed.append(f"{method.upper()} {path}")
    assert not unnamed, f"routes without a named response schema: {unnamed}"


@pytest.mark.parametrize(
    ("method", "path", "model"),
    [
        ("get", "/healthz", "Liveness"),
        ("get", "/readyz", "Readiness"),
        ("post", "/v1/users/{user_id}/respond", "RespondOut"),
        ("post", "/v1/users/{user_id}/compile", "Job"),
        ("get", "/v1/users/{user_id}/personas/{version}", "PersonaRecord"),
        ("post", "/v1/users/{user_id}/personas/rollback", "PersonaChange"),
        ("delete", "/v1/users/{user_id}", "ForgetOut"),
        ("post", "/v1/chat/completions", "ChatCompletion"),
    ],
)
def test_responses_name_their_models(schema, method, path, model):
    op = schema["paths"][path][method]
    code = "202" if path.endswith("/compile") else "200"
    assert op["responses"][code]["content"]["application/json"]["schema"]["$ref"] == f"#/components/schemas/{model}"


def test_readiness_and_streaming_chat_are_documented(schema):
    assert "503" in schema["paths"]["/readyz"]["get"]["responses"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}


def test_the_routes_that_return_a_response_themselves_match_their_documented_models(tracking_home, embedder):
    """`/readyz` and the chat route send their reply themselves (FastAPI does not check it against the model)."""
    app = create_app(Settings(api_key=ADMIN_KEY))
    assert Readiness.model_validate(TestClient(app).get("/readyz").json()).status == "starting"
    with service_workspace(embedder) as ws, TestClient(create_app(workspace=ws)) as client:
        assert Readiness.model_validate(client.get("/readyz").json()).status == "ready"
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "alice"}
        reply = client.post("/v1/chat/completions", json=body, headers=ADMIN).json()
        assert ChatCompletion.model_validate(reply).model_dump(mode="json") == reply
