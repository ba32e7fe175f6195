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
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")

from benchlib import machine, write_json  # benchmarks/benchlib.py, shared by the scripts
from service_harness import (  # benchmarks/service_harness.py: the home, the server process and its clients
    healthz_seconds,
    mint_tokens,
    open_workspace,
    percentiles,
    prepare,
    respond,
    running_server,
    serve,
    warm,
)
from service_load import bench_load, probe  # benchmarks/service_load.py: the --load run

RESULTS = Path(__file__).parent / "results" / "bench_service.json"
LOAD_RESULTS = Path(__file__).parent / "results" / "bench_service_load.json"


def sequential_seconds(client, tokens: dict[str, str], requests: int) -> list[float]:
    """The latency of `requests` answers one after the other, round-robin over the users."""
    latencies = []
    for i in range(requests):
        user = f"user{i % len(tokens)}"
        t = time.perf_counter()
        r = respond(client, user, tokens[user], f"request {i}")
        latencies.append(time.perf_counter() - t)
        r.raise_for_status()
    return latencies


async def concurrent_seconds(base: str, tokens: dict[str, str], requests: int, concurrency: int):
    """`requests` answers from `concurrency` clients; returns the elapsed seconds and each answer's latency."""
    import httpx

    latencies: list[float] = []
    queue = list(range(requests))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            i = queue.pop()
            user = f"user{i % len(tokens)}"
            t = time.perf_counter()
            r = await respond(client, user, tokens[user], f"request {i}")
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def bench_http(home: Path, users: int, requests: int, concurrency: int, search: bool) -> dict:
    import httpx

    tokens = mint_tokens(home, users)
    with running_server(home, search) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            warm(client, tokens)  # every user's program into the cache
            health = healthz_seconds(client, 200)
            sequential = sequential_seconds(client, tokens, requests)
        elapsed, loaded = asyncio.run(concurrent_seconds(base, tokens, requests, concurrency))
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


def targets(report: dict) -> dict:
    """The latency run's targets: the answer's HTTP overhead and load_program, warm and cold."""
    seq = report["http"]["respond_sequential"]
    return {
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


def bench_latency(args: argparse.Namespace) -> dict:
    """The default run: load_program, the answer in process, and over HTTP without and with a memory search."""
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        prepare(home, args.users)
        print(f"prepared {args.users} users in {time.perf_counter() - started:.1f} s", flush=True)
        report = {
            "machine": machine(load_average_at_start=os.getloadavg()),
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
        report["targets"] = targets(report)
    return report


def parse_args() -> argparse.Namespace:
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
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.probe:  # the /healthz prober process of the load run
        probe(args.probe, args.probe_stop, args.probe_out)
    elif args.serve:  # the server process
        serve(args.serve, args.port, args.search, args.lm_latency)
    else:
        path, report = (LOAD_RESULTS, bench_load(args)) if args.load else (RESULTS, bench_latency(args))
        write_json(path, report)
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
