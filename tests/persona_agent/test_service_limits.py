"""Quotas of user tokens (rows per minute, pending compile jobs: 429 with Retry-After; nothing written), chat
messages held to the store's `max_text_chars`, and an event loop that stays free while the agent's tools block."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fastapi.testclient import TestClient

from persona_agent.programs.tools import ToolContext, make_tools
from persona_agent.service import create_app
from persona_agent.stores import MemoryStore
from persona_agent.testing import ScriptedLM
from tests.persona_agent.test_service import ADMIN, ADMIN_KEY, service_workspace, user_token, wait_for
from tests.support import ANSWER, REACT, history, make_workspace

ROWS_PER_MINUTE = 5


@pytest.fixture
def workspace(tracking_home, embedder):
    limits = {"max_text_chars": 2_000, "quota_rows_per_minute": ROWS_PER_MINUTE, "quota_pending_jobs": 1}
    with service_workspace(embedder, **limits) as ws:
        yield ws


@pytest.fixture
def client(workspace):
    with TestClient(create_app(workspace=workspace)) as c:
        yield c


def items(n: int, start: int = 0) -> dict:
    """`n` distinct interactions (a repeated undated one is a duplicate the store skips)."""
    return {"items": [{"query": f"q{i}", "response": "r"} for i in range(start, start + n)]}


def test_rows_per_minute_quota_is_429_with_retry_after_and_writes_nothing(client, workspace):
    alice = user_token(client, "alice")
    assert client.post("/v1/users/alice/interactions", json=items(3), headers=alice).status_code == 200
    over = client.post("/v1/users/alice/interactions", json=items(3, start=3), headers=alice)
    assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1, over.text
    assert workspace.store.count("alice") == 4 + 3
    assert client.post("/v1/users/alice/interactions", json=items(2, start=3), headers=alice).status_code == 200
    feedback = client.post("/v1/users/alice/feedback", json={"request": "q", "response": "r"}, headers=alice)
    assert feedback.status_code == 429 and "retry-after" in feedback.headers
    recorded = client.post("/v1/users/alice/respond", json={"request": "hi", "record": True}, headers=alice)
    assert recorded.status_code == 429
    assert workspace.store.count("alice") == 4 + 5
    too_many = client.post(
        "/v1/users/bob/interactions", json=items(ROWS_PER_MINUTE + 1), headers=user_token(client, "bob")
    )
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "items"]
    assert client.post("/v1/users/alice/interactions", json=items(10), headers=ADMIN).status_code == 200  # exempt


def test_pending_compile_jobs_quota_is_429(client, workspace):
    alice = user_token(client, "alice")
    with workspace.commit_lock:  # the first job cannot commit, so it stays pending
        first = client.post("/v1/users/alice/compile", json={"n": 2}, headers=alice)
        assert first.status_code == 202
        second = client.post("/v1/users/alice/compile", json={"n": 2}, headers=alice)
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1
        admin = client.post("/v1/users/alice/compile", json={"n": 2}, headers=ADMIN)
        assert admin.status_code == 202  # the admin is exempt
    assert wait_for(client, first.json()["id"], alice)["status"] == "succeeded"
    assert wait_for(client, admin.json()["id"], ADMIN)["status"] in ("succeeded", "failed")


def test_a_chat_message_over_max_text_chars_is_422_naming_it(client, workspace):
    body = {
        "model": "persona-agent",
        "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y" * 2_001}],
    }
    response = client.post("/v1/chat/completions", json=body, headers=user_token(client, "alice"))
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "messages", 1, "content"]
    body = {**body, "user": "alice", "messages": [{"role": "user", "content": [{"type": "text", "text": "y" * 2_001}]}]}
    response = client.post("/v1/chat/completions", json=body, headers=ADMIN)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "messages", 0, "content"]
    assert workspace.registry.history("alice") == []  # refused before the agent ran


def _held(store: MemoryStore, seconds: float) -> threading.Event:
    """Hold the store's write transaction in another thread for up to `seconds` (until the event is set)."""
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.transaction():
            held.set()
            release.wait(seconds)

    threading.Thread(target=hold, daemon=True).start()
    assert held.wait(5)
    return release


def test_the_agents_tools_leave_the_event_loop_free_while_they_block(tmp_path, embedder):
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as store:
        [tool] = make_tools(ToolContext(user_id="alice", store=store), ["update_memory"])
        release = _held(store, 2.0)

        async def run() -> tuple[float, str]:
            call = asyncio.create_task(tool.acall(note="likes tea"))
            gaps, last = [], time.perf_counter()
            for _ in range(20):
                await asyncio.sleep(0.01)
                gaps.append(time.perf_counter() - last)
                last = time.perf_counter()
            assert not call.done()  # still waiting for the store, off the loop
            release.set()
            return max(gaps), await call

        longest, observation = asyncio.run(run())
        assert longest < 0.2 and observation == "Saved to the user's memory." and store.count("alice") == 1


def slow_note_lm() -> ScriptedLM:
    """An agent that writes a note (update_memory, which waits for the store) when the request says "slow"."""

    def step(call):
        if "slow" in call.inputs.get("request", "") and "observation_0" not in call.inputs.get("trajectory", ""):
            return {"next_thought": "note it", "next_tool_name": "update_memory", "next_tool_args": {"note": "n"}}
        return {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}}

    return ScriptedLM({REACT: step, ANSWER: {"response": "ok"}})


def test_healthz_answers_while_an_answer_waits_on_a_slow_tool(tracking_home, embedder):
    lm = slow_note_lm()
    with make_workspace(embedder, lm=lm, api_key=ADMIN_KEY) as ws, TestClient(create_app(workspace=ws)) as client:
        ws.store.add("alice", history())
        assert client.post("/v1/users/alice/respond", json={"request": "warm"}, headers=ADMIN).status_code == 200
        release = _held(ws.store, 5.0)
        answers: list = []
        slow = threading.Thread(
            target=lambda: answers.append(
                client.post("/v1/users/alice/respond", json={"request": "slow"}, headers=ADMIN)
            ),
            daemon=True,
        )
        try:
            slow.start()
            time.sleep(0.3)  # the answer is now inside update_memory, waiting for the store
            started = time.perf_counter()
            assert client.get("/healthz").status_code == 200
            took = time.perf_counter() - started
            assert slow.is_alive() and took < 0.25
        finally:
            release.set()
            slow.join(10)
        assert answers[0].status_code == 200 and ws.store.count("alice") == 5


def test_answers_beyond_max_concurrent_answers_wait_their_turn(tracking_home, embedder):
    lm = slow_note_lm()
    with (
        make_workspace(embedder, lm=lm, api_key=ADMIN_KEY, max_concurrent_answers=1) as ws,
        TestClient(create_app(workspace=ws)) as client,
    ):
        ws.store.add("alice", history())
        assert client.post("/v1/users/alice/respond", json={"request": "warm"}, headers=ADMIN).status_code == 200
        release = _held(ws.store, 5.0)
        done: list[str] = []

        def ask(request: str) -> None:
            client.post("/v1/users/alice/respond", json={"request": request}, headers=ADMIN).raise_for_status()
            done.append(request)

        slow, quick = (threading.Thread(target=ask, args=(r,), daemon=True) for r in ("slow", "quick"))
        try:
            slow.start()
            time.sleep(0.3)  # the slow answer holds the only slot, waiting for the store
            quick.start()
            time.sleep(0.5)
            assert done == [] and client.get("/healthz").status_code == 200  # the quick answer waits its turn
        finally:
            release.set()
            slow.join(10)
            quick.join(10)
        assert done == ["slow", "quick"]


def test_tools_parsed_once_stay_bound_to_their_own_context():
    alice, bob = (make_tools(ToolContext(user_id=u, store=object()), ["search_memory"])[0] for u in ("alice", "bob"))
    assert alice.args == bob.args == {"query": {"type": "string"}, "k": {"type": "integer", "default": 4}}
    assert alice.args is not bob.args and alice.func is not bob.func and alice.name == "search_memory"
