"""The HTTP service: auth (401 / 403), isolation, validation (422 naming the field), size limits, memory
routes, compile jobs, promote / rollback with the program cache, forget, and the OpenAI-compatible route —
in process, and with the official `openai` client against a live uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from fastapi.testclient import TestClient

from persona_agent.service import create_app
from persona_agent.service.auth import mint_token, token_secret
from persona_agent.workspace import Workspace
from tests.support import ADMIN_KEY, CONCISE, LONG, SHORT, history, make_workspace, museum_lm, opera_history

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def service_workspace(embedder, **settings) -> Workspace:
    """A workspace for the service tests: the admin key, and alice's and bob's histories (4 rows each)."""
    ws = make_workspace(embedder, api_key=ADMIN_KEY, **settings)
    for user in ("alice", "bob"):
        ws.store.add(user, history())
    return ws


@pytest.fixture
def workspace(tracking_home, embedder):
    with service_workspace(embedder, max_request_bytes=20_000, max_text_chars=2_000) as ws:
        yield ws


@pytest.fixture
def client(workspace):
    with TestClient(create_app(workspace=workspace)) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def user_token(client, user: str) -> dict[str, str]:
    response = client.post("/v1/tokens", json={"user_id": user}, headers=ADMIN)
    assert response.status_code == 200
    return bearer(response.json()["token"])


def make_concise(workspace, user: str = "alice") -> None:
    workspace.ensure_persona(user)
    workspace.registry.add(user, CONCISE, source="manual", parent=0)
    workspace.promote(user, "latest")


def test_health_and_readiness(workspace):
    app = create_app(workspace=workspace)
    cold = TestClient(app)  # no lifespan: not started
    assert cold.get("/healthz").json() == {"status": "ok"}
    assert cold.get("/readyz").status_code == 503
    with TestClient(app) as started:
        assert started.get("/readyz").json() == {"status": "ready"}


def test_every_route_needs_a_credential_and_tokens_reach_only_their_user(client, workspace):
    for method, path in (
        ("get", "/v1/users/alice/personas"),
        ("post", "/v1/users/alice/respond"),
        ("delete", "/v1/users/alice"),
        ("post", "/v1/chat/completions"),
        ("get", "/v1/jobs/job_x"),
    ):
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/users/alice/personas", headers=bearer("wrong")).status_code == 401
    alice = user_token(client, "alice")
    assert client.get("/v1/users/alice/personas", headers=alice).status_code == 200
    assert client.get("/v1/users/bob/personas", headers=alice).status_code == 403
    assert client.post("/v1/users/bob/respond", json={"request": "hi"}, headers=alice).status_code == 403
    assert client.delete("/v1/users/bob", headers=alice).status_code == 403
    assert client.post("/v1/tokens", json={"user_id": "bob"}, headers=alice).status_code == 403
    assert client.get("/v1/users/bob/personas", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    # a forged token (alice's signature on bob's claims) and an expired one are not credentials
    head, _, signature = alice["Authorization"][7:].split(".")
    bob = mint_token("bob", b"not the secret", ttl_seconds=60).split(".")[1]
    assert client.get("/v1/users/bob/personas", headers=bearer(f"{head}.{bob}.{signature}")).status_code == 401
    expired = mint_token("alice", token_secret(workspace.settings), ttl_seconds=1, now=time.time() - 10)
    response = client.get("/v1/users/alice/personas", headers=bearer(expired))
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_each_user_is_answered_by_their_own_persona(client, workspace):
    make_concise(workspace, "alice")
    alice, bob = user_token(client, "alice"), user_token(client, "bob")
    answer = client.post("/v1/users/alice/respond", json={"request": "hi"}, headers=alice).json()
    assert (answer["outputs"], answer["persona_version"]) == ({"response": SHORT}, 1)
    assert client.post("/v1/users/bob/respond", json={"request": "hi"}, headers=bob).json()["outputs"] == {
        "response": LONG
    }
    assert answer["usage"]["calls"] == 2
    assert client.post("/v1/users/nobody/respond", json={"request": "hi"}, headers=ADMIN).status_code == 404
    assert workspace.registry.history("nobody") == []


def test_invalid_input_is_422_naming_the_field(client):
    def field_of(response):
        assert response.status_code == 422, response.text
        return response.json()["detail"][0]["loc"]

    assert field_of(client.post("/v1/users/alice/interactions", json={"items": [{"response": "x"}]}, headers=ADMIN)) == [
        "body", "items", 0, "query",
    ]  # fmt: skip
    assert field_of(
        client.post("/v1/users/alice/interactions", json={"items": [{"query": "q", "mood": 1}]}, headers=ADMIN)
    ) == ["body", "items", 0, "mood"]
    too_long = {"items": [{"query": "x" * 3_000}]}  # over the store's max_text_chars
    assert field_of(client.post("/v1/users/alice/interactions", json=too_long, headers=ADMIN)) == [
        "body", "items", 0, "query",
    ]  # fmt: skip
    assert field_of(client.post("/v1/users/has%20space/respond", json={"request": "hi"}, headers=ADMIN)) == [
        "path", "user_id",
    ]  # fmt: skip
    assert field_of(client.post("/v1/users/alice/respond", json={"inputs": {"question": "x"}}, headers=ADMIN)) == [
        "body", "inputs",
    ]  # fmt: skip
    assert field_of(client.post("/v1/users/alice/compile", json={"n": 0}, headers=ADMIN)) == ["body", "n"]
    feedback = {"interaction_id": "mem_unknown", "response": "x"}
    assert field_of(client.post("/v1/users/alice/feedback", json=feedback, headers=ADMIN)) == ["body", "interaction_id"]
    both = client.post("/v1/users/alice/respond", json={}, headers=ADMIN)
    assert both.status_code == 422 and "exactly one of request or inputs" in both.text


def test_request_bodies_over_the_limit_are_413(client, workspace):
    big = json.dumps({"items": [{"query": "x" * 1_500}] * 20})
    response = client.post(
        "/v1/users/alice/interactions", content=big, headers={**ADMIN, "content-type": "application/json"}
    )
    assert response.status_code == 413
    chunks = (big[i : i + 4096].encode() for i in range(0, len(big), 4096))  # chunked: no Content-Length
    response = client.post(
        "/v1/users/alice/interactions", content=chunks, headers={**ADMIN, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert workspace.store.count("alice") == 4


def test_recorded_answers_and_feedback_go_to_memory_and_only_feedback_is_ground_truth(client, workspace):
    from persona_agent.compiling import alignment_examples
    from persona_agent.signatures import PersonalizedRequest

    out = client.post("/v1/users/alice/respond", json={"request": "Plan my trip", "record": True}, headers=ADMIN).json()
    stored = workspace.store.get("alice", out["interaction_id"])
    assert (stored.query, stored.response, stored.metadata["source"]) == ("Plan my trip", LONG, "agent")
    response = client.post(
        "/v1/users/alice/feedback",
        json={"interaction_id": out["interaction_id"], "response": "Rome, 3 days"},
        headers=ADMIN,
    )
    assert response.status_code == 200
    fed = workspace.store.get("alice", response.json()["id"])
    assert (fed.query, fed.response, fed.metadata) == (
        "Plan my trip", "Rome, 3 days", {"source": "feedback", "answers": out["interaction_id"]},
    )  # fmt: skip
    batch = alignment_examples(workspace.store, "alice", PersonalizedRequest, 2)
    assert [(e.request, e.response) for e in batch] == [("question 3", "ok"), ("Plan my trip", "Rome, 3 days")]
    added = client.post(
        "/v1/users/alice/interactions", json={"items": [{"query": "q", "response": "r"}]}, headers=ADMIN
    )
    assert added.status_code == 200 and len(added.json()["ids"]) == 1


def wait_for(client, job_id: str, headers: dict, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def test_compile_runs_as_a_background_job_and_the_new_persona_answers(client, workspace):
    alice, bob = user_token(client, "alice"), user_token(client, "bob")
    assert (
        client.post("/v1/users/alice/respond", json={"request": "hi"}, headers=alice).json()["outputs"]["response"]
        == LONG
    )
    response = client.post("/v1/users/alice/compile", json={"n": 2}, headers=alice)
    assert response.status_code == 202
    job = response.json()
    assert job["status"] in ("queued", "running", "succeeded") and job["estimate"]["max_lm_calls"] > 0
    assert client.get(f"/v1/jobs/{job['id']}", headers=bob).status_code == 403
    done = wait_for(client, job["id"], alice)
    assert done["status"] == "succeeded", done
    assert (done["result"]["version"], done["result"]["promoted"]) == (1, True)
    answer = client.post("/v1/users/alice/respond", json={"request": "hi"}, headers=alice).json()
    assert (answer["outputs"]["response"], answer["persona_version"]) == (SHORT, 1)
    versions = client.get("/v1/users/alice/personas", headers=alice).json()
    assert [v["version"] for v in versions["versions"]] == [0, 1] and versions["live"]["version"] == 1
    assert client.get("/v1/jobs/job_missing", headers=ADMIN).status_code == 404
    assert client.post("/v1/users/nobody/compile", headers=ADMIN).status_code == 404


def test_a_gepa_job_whose_persona_fails_the_checks_leaves_the_live_persona_serving(tracking_home, embedder):
    bare = "Act as a guide to museums and opera."
    with (
        make_workspace(embedder, lm=museum_lm(bare), api_key=ADMIN_KEY, task_signature="CategorizeArticle") as ws,
        TestClient(create_app(workspace=ws)) as c,
    ):
        ws.store.add("alice", opera_history())
        alice = user_token(c, "alice")
        before = c.post("/v1/users/alice/respond", json={"request": "Opera gala"}, headers=alice).json()
        job = c.post(
            "/v1/users/alice/compile", json={"strategy": "gepa", "max_lm_calls": 40, "constrain": False}, headers=alice
        )
        assert job.status_code == 202, job.text
        done = wait_for(c, job.json()["id"], alice)
        assert done["status"] == "succeeded", done
        result = done["result"]
        assert result["changed"] and not result["promoted"] and "no headings" in result["persona_check"]
        after = c.post("/v1/users/alice/respond", json={"request": "Opera gala"}, headers=alice).json()
        assert after["persona_version"] == before["persona_version"] == 0
        versions = c.get("/v1/users/alice/personas", headers=alice).json()
        assert [v["version"] for v in versions["versions"]] == [0, 1] and versions["live"]["version"] == 0


def test_promote_and_rollback_use_optimistic_locking_and_drop_cached_programs(client, workspace):
    make_concise(workspace, "alice")
    client.post("/v1/users/alice/respond", json={"request": "hi"}, headers=ADMIN)
    assert "alice" in workspace.programs.users()
    live = client.get("/v1/users/alice/personas", headers=ADMIN).json()["live"]
    stale = live["revision"] - 1
    response = client.post("/v1/users/alice/personas/0/promote", json={"expected_revision": stale}, headers=ADMIN)
    assert response.status_code == 409
    assert "alice" in workspace.programs.users()  # a refused change keeps the cache
    response = client.post(
        "/v1/users/alice/personas/rollback", json={"expected_revision": live["revision"]}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    change = response.json()
    assert (change["record"]["source"], change["record"]["parent"], change["live"]["version"]) == ("rollback", 0, 2)
    assert "alice" not in workspace.programs.users()
    answer = client.post("/v1/users/alice/respond", json={"request": "hi"}, headers=ADMIN).json()
    assert (answer["outputs"]["response"], answer["persona_version"]) == (LONG, 2)
    diff = client.get("/v1/users/alice/personas/diff", params={"a": 1, "b": 2}, headers=ADMIN).json()["diff"]
    assert "-Wants very concise answers." in diff
    response = client.post("/v1/users/alice/personas/1/promote", headers=ADMIN)
    assert response.status_code == 200 and response.json()["live"]["version"] == 1
    assert client.get("/v1/users/alice/personas/1", headers=ADMIN).json()["text"] == CONCISE
    assert client.post("/v1/users/alice/personas/9/promote", headers=ADMIN).status_code == 404


def test_forget_through_the_api_removes_the_user_everywhere(client, workspace):
    alice = user_token(client, "alice")
    job = client.post("/v1/users/alice/compile", headers=alice).json()
    wait_for(client, job["id"], alice)
    client.post("/v1/users/alice/respond", json={"request": "hi", "record": True}, headers=alice)
    response = client.delete("/v1/users/alice", headers=alice)  # a user may erase themselves
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["interactions"] == 5 and report["vectors"] == 5
    assert report["extra"]["personas"] == 2 and report["extra"]["jobs"] == 1 and report["extra"]["mlflow_runs"] == 2
    assert report["extra"]["cached_programs"] >= 1 and report["total"] >= 10
    assert client.get(f"/v1/jobs/{job['id']}", headers=ADMIN).status_code == 404
    assert client.get("/v1/users/alice/personas", headers=ADMIN).json() == {
        "user_id": "alice",
        "live": None,
        "versions": [],
    }
    assert client.post("/v1/users/alice/respond", json={"request": "hi"}, headers=ADMIN).status_code == 404
    assert workspace.store.count("bob") == 4


def test_chat_completions_in_process(client, workspace):
    make_concise(workspace, "alice")
    alice = user_token(client, "alice")
    body = {"model": "persona-agent", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
    out = client.post("/v1/chat/completions", json=body, headers=alice).json()  # the token's own user
    assert out["object"] == "chat.completion" and out["choices"][0]["message"] == {
        "role": "assistant",
        "content": SHORT,
    }
    assert out["usage"]["total_tokens"] > 0 and out["system_fingerprint"] == "alice@v1"
    assert client.post("/v1/chat/completions", json={**body, "user": "bob"}, headers=alice).status_code == 403
    missing = client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "user"]
    system_only = {**body, "user": "bob", "messages": [{"role": "system", "content": "x"}]}
    assert client.post("/v1/chat/completions", json=system_only, headers=ADMIN).status_code == 422
    stream = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=alice)
    events = [line[6:] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[0])["choices"][0]["delta"]["content"] == SHORT


def test_the_official_openai_client_against_a_live_server(workspace):
    import uvicorn
    from openai import OpenAI

    make_concise(workspace, "alice")
    app = create_app(workspace=workspace)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        base = f"http://127.0.0.1:{port}/v1"
        alice_token = mint_token("alice", token_secret(workspace.settings), ttl_seconds=600)
        alice = OpenAI(base_url=base, api_key=alice_token, max_retries=0, timeout=15)
        reply = alice.chat.completions.create(model="persona-agent", messages=[{"role": "user", "content": "hi"}])
        assert reply.choices[0].message.content == SHORT and reply.system_fingerprint == "alice@v1"
        admin = OpenAI(base_url=base, api_key=ADMIN_KEY, max_retries=0, timeout=15)
        reply = admin.chat.completions.create(
            model="persona-agent", messages=[{"role": "user", "content": "hi"}], user="bob"
        )
        assert reply.choices[0].message.content == LONG
        chunks = list(
            alice.chat.completions.create(
                model="persona-agent", messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == SHORT
        from openai import PermissionDeniedError

        with pytest.raises(PermissionDeniedError):
            alice.chat.completions.create(
                model="persona-agent", messages=[{"role": "user", "content": "hi"}], user="bob"
            )
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive()
