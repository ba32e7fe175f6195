"""The service benchmark's harness: a prepared home, the scripted LMs, the server process and its clients.

`bench_service.py` runs the server and the /healthz prober as its own subprocesses (hidden `--serve` and
`--probe` options), so neither shares an interpreter with the load generator. Imports of the package, httpx
and uvicorn stay inside the functions that need them: the prober process only needs httpx.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("bench_service.py")  # its hidden --serve and --probe options run the subprocesses
# One strong key per run, shared with the server process through the environment.
API_KEY = os.environ.setdefault("PERSONA_AGENT_API_KEY", secrets.token_urlsafe(32))
TOKEN_TTL = 3600
PERSONA = "## User profile\nWants concise answers.\n\n## Agent instructions\nAnswer briefly."
REACT = "request, trajectory -> next_thought, next_tool_name, next_tool_args"
ANSWER = "request, trajectory -> response"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in seconds)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(q * len(ms)))], 3)

    return {
        "n": len(ms),
        "p50_ms": at(0.50),
        "p90_ms": at(0.90),
        "p99_ms": at(0.99),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _step(search: bool):
    def step(call):
        done = "observation_0" in call.inputs.get("trajectory", "")
        if search and not done:
            return {"next_thought": "look", "next_tool_name": "search_memory", "next_tool_args": {"query": "q", "k": 3}}
        return {"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}}

    return step


def scripted_lm(search: bool):
    from persona_agent.testing import ScriptedLM

    return ScriptedLM({REACT: _step(search), ANSWER: {"response": "Short answer."}})


def identity_answer(call) -> dict[str, str]:
    """What the answer saw: whose persona (system message), whose memory (the search's hits) and which request."""
    persona = re.search(r"This is (user\d+)\.", call.messages[0]["content"])
    memory = sorted({f"user{n}" for n in re.findall(r"of user (\d+)", call.inputs.get("trajectory", ""))})
    seen = f"persona={persona.group(1) if persona else None} memory={','.join(memory)}"
    return {"response": f"{seen} request={call.inputs.get('request', '')}"}


def slow_lm(latency: float):
    """The scripted agent (one `search_memory` call, then finish) behind a fixed latency per LM call."""
    import dspy

    from persona_agent.testing import AsyncScriptedEngine, ScriptedEngine

    class SlowEngine(ScriptedEngine):
        def complete(self, request):
            time.sleep(latency)
            return super().complete(request)

    class SlowAsyncEngine(AsyncScriptedEngine):
        async def complete(self, request):
            await asyncio.sleep(latency)
            return ScriptedEngine.complete(self.sync, request)  # the script, without the sync path's sleep

    engine = SlowEngine({REACT: _step(True), ANSWER: identity_answer})
    return dspy.LM("scripted/lm", engine=engine, async_engine=SlowAsyncEngine(engine), cache=False, num_retries=0)


def open_workspace(home: Path, search: bool, latency: float = 0.0):
    from persona_agent.core.config import Settings
    from persona_agent.workspace import Workspace

    settings = Settings(home=home, api_key=API_KEY, lm_cache=False)
    return Workspace(settings, lm=slow_lm(latency) if latency else scripted_lm(search))


def prepare(home: Path, users: int, persona: Callable[[str], str] = lambda user: PERSONA) -> None:
    """Users with ten interactions each and a live persona version 1 (the compiled one, as the registry holds it)."""
    ws = open_workspace(home, search=False)
    try:
        records = [
            (f"user{u}", {"query": f"question {i} of user {u}", "response": "ok"})
            for u in range(users)
            for i in range(10)
        ]
        ws.store.ingest(records)
        for u in range(users):
            ws.ensure_persona(f"user{u}")
            user = f"user{u}"
            ws.registry.add(user, persona(user), source="aligned", parent=0, program=ws.registry.program(user, 0))
            ws.registry.promote(f"user{u}", 1)
    finally:
        ws.close()


def mint_tokens(home: Path, users: int) -> dict[str, str]:
    """One user token per prepared user (`user0`, `user1`, ...), signed with the home's secret."""
    from persona_agent.core.config import Settings
    from persona_agent.service.auth import mint_token, token_secret

    secret = token_secret(Settings(home=home, api_key=API_KEY))
    return {f"user{u}": mint_token(f"user{u}", secret, ttl_seconds=TOKEN_TTL) for u in range(users)}


def serve(home: Path, port: int, search: bool, latency: float = 0.0) -> None:
    """The server process: uvicorn on 127.0.0.1:port over the prepared home."""
    import uvicorn

    from persona_agent.service import create_app

    app = create_app(workspace=open_workspace(home, search, latency))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, search: bool, latency: float = 0.0) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    args = [sys.executable, str(SCRIPT), "--serve", str(home), "--port", str(port)] + (["--search"] if search else [])
    args += ["--lm-latency", str(latency)] if latency else []
    proc = subprocess.Popen(args)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("the server process exited")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not become ready")


@contextmanager
def running_server(home: Path, search: bool, latency: float = 0.0) -> Iterator[str]:
    """A live server over `home` for the block (its base URL), terminated afterwards."""
    proc, base = start_server(home, search, latency)
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def respond(client: Any, user: str, token: str, request: str) -> Any:
    """POST one answer request as `user`; with an `httpx.AsyncClient`, await the result."""
    return client.post(
        f"/v1/users/{user}/respond", json={"request": request}, headers={"Authorization": f"Bearer {token}"}
    )


def warm(client: Any, tokens: dict[str, str]) -> None:
    """One answer per user, so every user's program (and FAISS partition) is in the server's caches."""
    for user, token in tokens.items():
        respond(client, user, token, "warm").raise_for_status()


def healthz_seconds(client: Any, times: int) -> list[float]:
    """The latency of `times` sequential GET /healthz."""
    latencies = []
    for _ in range(times):
        t = time.perf_counter()
        client.get("/healthz").raise_for_status()
        latencies.append(time.perf_counter() - t)
    return latencies
