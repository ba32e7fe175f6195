"""The service's credentials: weak keys are refused, tokens expire, have one spelling and can be revoked (by the
admin, and by forget), the API docs need the admin key, and a request is authenticated before its body is read."""

from __future__ import annotations

import hashlib
import time

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from persona_agent import cli
from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError
from persona_agent.service import create_app
from persona_agent.service.auth import token_secret, verify_token
from tests.persona_agent.test_service import ADMIN, ADMIN_KEY, bearer, service_workspace, user_token

WEAK = ["", "short-key-1", "a" * 40, "ab" * 20, "12345678" * 3, f" {ADMIN_KEY}"]


@pytest.fixture
def workspace(tracking_home, embedder):
    with service_workspace(embedder) as ws:
        yield ws


@pytest.fixture
def client(workspace):
    with TestClient(create_app(workspace=workspace)) as c:
        yield c


@pytest.mark.parametrize("weak", WEAK)
def test_a_weak_admin_key_or_token_secret_is_refused_at_startup(weak):
    with pytest.raises(ConfigError, match="PERSONA_AGENT_API_KEY"):
        create_app(Settings(api_key=weak))
    with pytest.raises(ConfigError, match="PERSONA_AGENT_TOKEN_SECRET"):
        create_app(Settings(api_key=ADMIN_KEY, token_secret=weak))


def test_serve_and_token_exit_2_on_a_set_but_empty_key(monkeypatch):
    monkeypatch.setenv("PERSONA_AGENT_API_KEY", "")
    runner = CliRunner()
    # An unusable host: were the key accepted, uvicorn would fail to bind (exit 1) instead of serving.
    result = runner.invoke(cli.app, ["serve", "--host", "256.0.0.1", "--lm", "openai/unused"])
    assert result.exit_code == 2, result.output
    assert "PERSONA_AGENT_API_KEY is too weak" in result.stderr and "24 characters" in result.stderr
    result = runner.invoke(cli.app, ["token", "--user", "alice"])
    assert result.exit_code == 2 and "too weak" in result.stderr


def test_tokens_expire_by_default(workspace):
    settings = Settings(api_key=ADMIN_KEY, token_ttl_seconds=1)
    with TestClient(create_app(settings, workspace=workspace)) as client:
        alice = user_token(client, "alice")  # minted without a ttl: the setting's 1 s
        assert client.get("/v1/users/alice/personas", headers=alice).status_code == 200
        time.sleep(1.1)
        response = client.get("/v1/users/alice/personas", headers=alice)
        assert response.status_code == 401 and "expired" in response.json()["detail"]
    claims = verify_token(alice["Authorization"][7:], token_secret(settings), now=0)
    assert claims.expires_at - claims.issued_at == 1
    assert Settings().token_ttl_seconds == 86_400


def _non_canonical(part: str) -> str:
    """The same bytes in another spelling: a 32-byte signature leaves 2 unused bits in its last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return part[:-1] + alphabet[alphabet.index(part[-1]) ^ 1]


def test_an_altered_signature_is_not_a_credential(client):
    token = user_token(client, "alice")["Authorization"][7:]
    head, payload, signature = token.split(".")
    altered = [
        token + "==",
        token + "=",
        token + "!!",
        token + "~",
        f"{head}.{payload}.{_non_canonical(signature)}",
        f"{head}.{payload}=.{signature}",
    ]
    assert client.get("/v1/users/alice/personas", headers=bearer(token)).status_code == 200
    for bad in altered:
        response = client.get("/v1/users/alice/personas", headers=bearer(bad))
        assert response.status_code == 401, bad


def test_the_admin_revokes_a_users_tokens(client, workspace):
    alice = user_token(client, "alice")
    bob = user_token(client, "bob")
    assert client.post("/v1/users/alice/tokens/revoke", headers=alice).status_code == 403  # admin only
    response = client.post("/v1/users/alice/tokens/revoke", headers=ADMIN)
    assert response.status_code == 200 and response.json()["user_id"] == "alice"
    dead = client.get("/v1/users/alice/personas", headers=alice)
    assert dead.status_code == 401 and "revoked" in dead.json()["detail"]
    assert client.get("/v1/users/bob/personas", headers=bob).status_code == 200
    fresh = user_token(client, "alice")
    assert client.get("/v1/users/alice/personas", headers=fresh).status_code == 200


def test_after_forget_an_old_token_cannot_recreate_the_user_but_a_fresh_one_can(client, workspace):
    alice = user_token(client, "alice")
    assert client.delete("/v1/users/alice", headers=alice).status_code == 200
    item = {"items": [{"query": "I am back", "response": "ok"}]}
    response = client.post("/v1/users/alice/interactions", json=item, headers=alice)
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    assert workspace.store.count("alice") == 0 and workspace.registry.history("alice") == []
    rows = workspace.store.cursor().execute("SELECT * FROM token_revocations").fetchall()
    assert rows and all("alice" not in str(row) for row in rows)
    assert rows[0][0] == hashlib.sha256(b"alice").hexdigest()
    fresh = user_token(client, "alice")
    assert client.post("/v1/users/alice/interactions", json=item, headers=fresh).status_code == 200
    assert workspace.store.count("alice") == 1


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_the_api_docs_need_the_admin_key_unless_a_setting_opens_or_removes_them(client, path, workspace):
    assert client.get(path).status_code == 401
    assert client.get(path, headers=user_token(client, "alice")).status_code == 403
    assert client.get(path, headers=ADMIN).status_code == 200
    public = create_app(Settings(api_key=ADMIN_KEY, docs_access="public"), workspace=workspace)
    with TestClient(public) as c:
        assert c.get(path).status_code == 200
    off = create_app(Settings(api_key=ADMIN_KEY, docs_access="off"), workspace=workspace)
    with TestClient(off) as c:
        assert c.get(path).status_code == 401 and c.get(path, headers=ADMIN).status_code == 404


def test_an_unauthenticated_malformed_body_is_401_not_422(client, workspace):
    json_header = {"content-type": "application/json"}
    for headers in (json_header, {**json_header, **bearer("pat.bad.token")}):
        response = client.post("/v1/users/alice/interactions", content=b'{"items": [', headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        response = client.post("/v1/chat/completions", json={"messages": 5}, headers=headers)
        assert response.status_code == 401
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    assert workspace.store.count("alice") == 4
