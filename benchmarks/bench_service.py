"""Service overhead and program-loading latency, with the scripted LM (zero LM latency: the figures are ours).

- `/v1/users/{id}/respond` over loopback against a live uvicorn in its own process (so the load generator does
  not share the server's interpreter): sequential latency p50/p99, and requests/s with concurrent clients.
  The scripted agent finishes its tool loop at once (two LM calls: the step and the answer); a second scenario
  adds one `search_memory` call, which embeds the query with MiniLM on the CPU.
- The same answer in process (no HTTP) and `/healthz` (HTTP only), to split the overhead.
- `load_program`: cold (a registry version not in the program cache; the process already built a template for
  the program's shape), first-in-process (no template yet), and warm (cache hit + the caller's copy).

    python benchmarks/bench_service.py [--users 50] [--requests 400] [--concurrency 8]

Writes benchmarks/results/bench_service.json and prints it.

The load run (`--load`) is separate: 10 users (user tokens), 50 then 200 concurrent clients against the live
server on loopback, the scripted LM with a fixed latency per call (200 ms; three calls per answer: a step that
calls `search_memory`, which embeds the query with the real MiniLM and searches FAISS, a step that finishes, the
answer), and `/healthz` probed from a separate process meanwhile. It counts errors and cross-user mix-ups (the
scripted answer echoes whose persona, whose memory and which request it saw), and is bounded in requests and
seconds per level.

    python benchmarks/bench_service.py --load [--load-users 10] [--load-requests 1000] [--load-seconds 120]

Writes benchmarks/results/bench_service_load.json and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

RESULTS = Path(__file__).parent / "results" / "bench_service.json"
LOAD_RESULTS = Path(__file__).parent / "results" / "bench_service_load.json"
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


def prepare(home: Path, users: int, persona=lambda user: PERSONA) -> None:
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
    args = [sys.executable, __file__, "--serve", str(home), "--port", str(port)] + (["--search"] if search else [])
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


def bench_http(home: Path, users: int, requests: int, concurrency: int, search: bool) -> dict:
    import httpx

    from persona_agent.core.config import Settings
    from persona_agent.service.auth import mint_token, token_secret

    secret = token_secret(Settings(home=home, api_key=API_KEY))
    tokens = {f"user{u}": mint_token(f"user{u}", secret, ttl_seconds=TOKEN_TTL) for u in range(users)}
    proc, base = start_server(home, search)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            for u in range(users):  # warm every user's program into the cache
                user = f"user{u}"
                r = client.post(
                    f"/v1/users/{user}/respond",
                    json={"request": "warm"},
                    headers={"Authorization": f"Bearer {tokens[user]}"},
                )
                r.raise_for_status()
            health = []
            for _ in range(200):
                t = time.perf_counter()
                client.get("/healthz").raise_for_status()
                health.append(time.perf_counter() - t)
            sequential = []
            for i in range(requests):
                user = f"user{i % users}"
                t = time.perf_counter()
                r = client.post(
                    f"/v1/users/{user}/respond",
                    json={"request": f"request {i}"},
                    headers={"Authorization": f"Bearer {tokens[user]}"},
                )
                sequential.append(time.perf_counter() - t)
                r.raise_for_status()

        async def load() -> tuple[float, list[float]]:
            latencies: list[float] = []
            queue = list(range(requests))

            async def worker(client: httpx.AsyncClient) -> None:
                while queue:
                    i = queue.pop()
                    user = f"user{i % users}"
                    t = time.perf_counter()
                    r = await client.post(
                        f"/v1/users/{user}/respond",
                        json={"request": f"request {i}"},
                        headers={"Authorization": f"Bearer {tokens[user]}"},
                    )
                    latencies.append(time.perf_counter() - t)
                    r.raise_for_status()

            limits = httpx.Limits(max_connections=concurrency)
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
                started = time.perf_counter()
                await asyncio.gather(*(worker(client) for _ in range(concurrency)))
                return time.perf_counter() - started, latencies

        elapsed, loaded = asyncio.run(load())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return {
        "healthz": percentiles(health),
        "respond_sequential": percentiles(sequential),
        "respond_concurrent": {
            "concurrency": concurrency,
            "requests_per_second": round(requests / elapsed, 1),
            **percentiles(loaded),
        },
    }


def bench_in_process(home: Path, users: int, requests: int, search: bool) -> dict:
    ws = open_workspace(home, search)
    try:
        for u in range(users):
            ws.respond(f"user{u}", "warm")

        async def run() -> list[float]:
            out = []
            for i in range(requests):
                t = time.perf_counter()
                await ws.arespond(f"user{i % users}", f"request {i}")
                out.append(time.perf_counter() - t)
            return out

        return percentiles(asyncio.run(run()))
    finally:
        ws.close()


def bench_load_program(home: Path, users: int, rounds: int) -> dict:
    ws = open_workspace(home, search=False)
    try:
        t = time.perf_counter()
        ws.load_program("user0")  # no template for this program shape yet
        first = time.perf_counter() - t
        cold, warm, shared = [], [], []
        for _ in range(rounds):
            ws.programs.clear()
            for u in range(users):
                t = time.perf_counter()
                ws.load_program(f"user{u}")
                cold.append(time.perf_counter() - t)
            for u in range(users):
                t = time.perf_counter()
                ws.load_program(f"user{u}")
                warm.append(time.perf_counter() - t)
                t = time.perf_counter()
                ws.program(f"user{u}")
                shared.append(time.perf_counter() - t)
        return {
            "first_in_process_ms": round(first * 1000, 3),
            "cold": percentiles(cold),
            "warm": percentiles(warm),
            "warm_shared_instance": percentiles(shared),
        }
    finally:
        ws.close()


def probe(base: str, stop: Path, out: Path) -> None:
    """The /healthz prober process (its own interpreter, so the load generator does not delay it): one GET every
    20 ms until `stop` exists; writes the latencies (s) and the failures to `out`."""
    import httpx

    latencies: list[float] = []
    failures = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        while not stop.exists():
            t = time.perf_counter()
            try:
                ok = client.get("/healthz").status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t)
            failures += not ok
            time.sleep(0.02)
    out.write_text(json.dumps({"latencies": latencies, "failures": failures}))


def load_level(base: str, tokens: dict[str, str], concurrency: int, requests: int, seconds: float, tmp: Path) -> dict:
    """`requests` answers (or as many as fit in `seconds`) from `concurrency` clients, round-robin over the users,
    with `/healthz` probed meanwhile; every answer is checked for the right user, memory and request."""
    import httpx

    stop, sink = tmp / f"stop-{concurrency}", tmp / f"healthz-{concurrency}.json"
    prober = subprocess.Popen(
        [sys.executable, __file__, "--probe", base, "--probe-stop", str(stop), "--probe-out", str(sink)]
    )
    users = sorted(tokens)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    mixups = 0

    async def worker(client: httpx.AsyncClient, queue, deadline: float) -> None:
        nonlocal mixups
        for i in queue:  # one iterator shared by the workers: each request is sent once
            if time.monotonic() > deadline:
                return
            user, nonce = users[i % len(users)], f"req-{concurrency}-{i}"
            t = time.perf_counter()
            try:
                r = await client.post(
                    f"/v1/users/{user}/respond",
                    json={"request": nonce},
                    headers={"Authorization": f"Bearer {tokens[user]}"},
                )
            except httpx.HTTPError as exc:
                kind = f"{type(exc).__name__}: {exc}"[:120]
                errors[kind] = errors.get(kind, 0) + 1
                continue
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                continue
            body = r.json()
            expected = f"persona={user} memory={user} request={nonce}"
            mixups += body["user_id"] != user or body["outputs"]["response"] != expected

    async def run() -> float:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
            queue, deadline = iter(range(requests)), time.monotonic() + seconds
            started = time.perf_counter()
            await asyncio.gather(*(worker(client, queue, deadline) for _ in range(concurrency)))
            return time.perf_counter() - started

    time.sleep(1.0)  # the prober is up and probing an idle server first
    elapsed = asyncio.run(run())
    stop.touch()
    prober.wait(timeout=60)
    health = json.loads(sink.read_text())
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "latency": percentiles(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "mixups": mixups,
        "healthz_under_load": percentiles(health["latencies"]),
        "healthz_failures": health["failures"],
    }


def bench_load(args: argparse.Namespace) -> dict:
    """The load run: a fresh home of `--load-users` users whose personas and memories name them, one live server."""
    import httpx

    from persona_agent.core.config import Settings
    from persona_agent.service.auth import mint_token, token_secret

    with tempfile.TemporaryDirectory(prefix="bench-service-load-") as tmp:
        home = Path(tmp) / "home"
        prepare(home, args.load_users, persona=lambda user: PERSONA.replace("Wants", f"This is {user}. Wants"))
        secret = token_secret(Settings(home=home, api_key=API_KEY))
        tokens = {f"user{u}": mint_token(f"user{u}", secret, ttl_seconds=TOKEN_TTL) for u in range(args.load_users)}
        proc, base = start_server(home, search=True, latency=args.load_latency)
        try:
            with httpx.Client(base_url=base, timeout=60) as client:
                for user, token in tokens.items():  # warm every user's program and FAISS partition
                    r = client.post(
                        f"/v1/users/{user}/respond",
                        json={"request": "warm"},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    r.raise_for_status()
                idle = []
                for _ in range(100):
                    t = time.perf_counter()
                    client.get("/healthz").raise_for_status()
                    idle.append(time.perf_counter() - t)
            levels = []
            for concurrency in (50, 200):
                levels.append(load_level(base, tokens, concurrency, args.load_requests, args.load_seconds, Path(tmp)))
                print(json.dumps(levels[-1], indent=2), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    worst = max(level["healthz_under_load"]["p99_ms"] for level in levels)
    errors = sum(level["errors"] + level["healthz_failures"] for level in levels)
    mixups = sum(level["mixups"] for level in levels)
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "setup": {
            "users": args.load_users,
            "requests_per_level": args.load_requests,
            "seconds_per_level_at_most": args.load_seconds,
            "lm": f"scripted, {args.load_latency * 1000:.0f} ms per call, 3 calls per answer",
            "tools": "search_memory once per answer (real all-MiniLM-L6-v2 + FAISS)",
            "server": "uvicorn on 127.0.0.1 in its own process; /healthz probed every 20 ms from a third process",
            "credentials": "one user token per user",
            "max_concurrent_answers": Settings().max_concurrent_answers,
        },
        "healthz_idle": percentiles(idle),
        "levels": levels,
        "targets": {
            "healthz_p99_ms_under_load": {"target": 50, "measured": worst, "met": worst < 50},
            "errors": {"target": 0, "measured": errors, "met": errors == 0},
            "cross_user_mixups": {"target": 0, "measured": mixups, "met": mixups == 0},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--load-rounds", type=int, default=4)
    parser.add_argument("--load", action="store_true", help="Only the load run (writes bench_service_load.json).")
    parser.add_argument("--load-users", type=int, default=10)
    parser.add_argument("--load-requests", type=int, default=1000, help="Answers per concurrency level, at most.")
    parser.add_argument("--load-seconds", type=float, default=120, help="Seconds per concurrency level, at most.")
    parser.add_argument("--load-latency", type=float, default=0.2, help="Seconds per scripted LM call.")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--search", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lm-latency", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--probe-stop", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, args.probe_stop, args.probe_out)
        return
    if args.serve:
        serve(args.serve, args.port, args.search, args.lm_latency)
        return
    if args.load:
        report = bench_load(args)
        LOAD_RESULTS.parent.mkdir(parents=True, exist_ok=True)
        LOAD_RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        prepare(home, args.users)
        print(f"prepared {args.users} users in {time.perf_counter() - started:.1f} s", flush=True)
        report = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average_at_start": os.getloadavg(),
            },
            "setup": {"users": args.users, "requests": args.requests, "lm": "scripted (zero latency)"},
            "load_program": bench_load_program(home, args.users, args.load_rounds),
        }
        print(json.dumps(report["load_program"], indent=2), flush=True)
        report["respond_in_process"] = bench_in_process(home, args.users, args.requests, search=False)
        report["http"] = bench_http(home, args.users, args.requests, args.concurrency, search=False)
        print(json.dumps(report["http"], indent=2), flush=True)
        report["http_with_memory_search"] = bench_http(
            home, args.users, args.requests // 2, args.concurrency, search=True
        )
        seq = report["http"]["respond_sequential"]
        report["targets"] = {
            "respond_overhead_p50_ms": {"target": 10, "measured": seq["p50_ms"], "met": seq["p50_ms"] < 10},
            "load_program_warm_p50_ms": {
                "target": 1,
                "measured": report["load_program"]["warm"]["p50_ms"],
                "met": report["load_program"]["warm"]["p50_ms"] < 1,
            },
            "load_program_cold_p50_ms": {
                "target": 50,
                "measured": report["load_program"]["cold"]["p50_ms"],
                "met": report["load_program"]["cold"]["p50_ms"] < 50,
            },
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
