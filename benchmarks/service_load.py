"""The service load run (`bench_service.py --load`): concurrent clients against one live server, /healthz
probed from a third process meanwhile, every answer checked for cross-user mix-ups. See bench_service.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchlib import machine
from service_harness import (
    PERSONA,
    SCRIPT,
    healthz_seconds,
    mint_tokens,
    percentiles,
    prepare,
    respond,
    running_server,
    warm,
)


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


@contextmanager
def probing(base: str, tmp: Path, name: str) -> Iterator[dict[str, Any]]:
    """The prober process for the block; the dict it yields holds its `latencies` and `failures` afterwards."""
    stop, sink = tmp / f"stop-{name}", tmp / f"healthz-{name}.json"
    prober = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--probe", base, "--probe-stop", str(stop), "--probe-out", str(sink)]
    )
    health: dict[str, Any] = {}
    time.sleep(1.0)  # the prober is up and probing an idle server first
    yield health
    stop.touch()
    prober.wait(timeout=60)
    health.update(json.loads(sink.read_text()))


class LoadLevel:
    """One concurrency level's clients, round-robin over the users, and what they saw: latencies, errors by
    kind, and answers that name the wrong user, memory or request (mix-ups)."""

    def __init__(self, base: str, tokens: dict[str, str], concurrency: int) -> None:
        self.base, self.tokens, self.concurrency = base, tokens, concurrency
        self.users = sorted(tokens)
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.mixups = 0

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def worker(self, client: Any, queue: Iterator[int], deadline: float) -> None:
        import httpx

        for i in queue:  # one iterator shared by the workers: each request is sent once
            if time.monotonic() > deadline:
                return
            user, nonce = self.users[i % len(self.users)], f"req-{self.concurrency}-{i}"
            t = time.perf_counter()
            try:
                r = await respond(client, user, self.tokens[user], nonce)
            except httpx.HTTPError as exc:
                self.count_error(f"{type(exc).__name__}: {exc}"[:120])
                continue
            self.latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                self.count_error(str(r.status_code))
                continue
            body = r.json()
            expected = f"persona={user} memory={user} request={nonce}"
            self.mixups += body["user_id"] != user or body["outputs"]["response"] != expected

    async def run(self, requests: int, seconds: float) -> float:
        """Send up to `requests` answers within `seconds`; returns the elapsed seconds."""
        import httpx

        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.base, timeout=60, limits=limits) as client:
            queue, deadline = iter(range(requests)), time.monotonic() + seconds
            started = time.perf_counter()
            await asyncio.gather(*(self.worker(client, queue, deadline) for _ in range(self.concurrency)))
            return time.perf_counter() - started


def load_level(base: str, tokens: dict[str, str], concurrency: int, requests: int, seconds: float, tmp: Path) -> dict:
    """`requests` answers (or as many as fit in `seconds`) from `concurrency` clients, round-robin over the users,
    with `/healthz` probed meanwhile; every answer is checked for the right user, memory and request."""
    level = LoadLevel(base, tokens, concurrency)
    with probing(base, tmp, str(concurrency)) as health:
        elapsed = asyncio.run(level.run(requests, seconds))
    return {
        "concurrency": concurrency,
        "requests": len(level.latencies),
        "seconds": round(elapsed, 2),
        "requests_per_second": round(len(level.latencies) / elapsed, 1),
        "latency": percentiles(level.latencies),
        "errors": sum(level.errors.values()),
        "error_kinds": level.errors,
        "mixups": level.mixups,
        "healthz_under_load": percentiles(health["latencies"]),
        "healthz_failures": health["failures"],
    }


def bench_load(args: argparse.Namespace) -> dict:
    """The load run: a fresh home of `--load-users` users whose personas and memories name them, one live server."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="bench-service-load-") as tmp:
        home = Path(tmp) / "home"
        prepare(home, args.load_users, persona=lambda user: PERSONA.replace("Wants", f"This is {user}. Wants"))
        tokens = mint_tokens(home, args.load_users)
        with running_server(home, search=True, latency=args.load_latency) as base:
            with httpx.Client(base_url=base, timeout=60) as client:
                warm(client, tokens)  # every user's program and FAISS partition
                idle = healthz_seconds(client, 100)
            levels = []
            for concurrency in (50, 200):
                levels.append(load_level(base, tokens, concurrency, args.load_requests, args.load_seconds, Path(tmp)))
                print(json.dumps(levels[-1], indent=2), flush=True)
    return load_report(args, idle, levels)


def load_report(args: argparse.Namespace, idle: list[float], levels: list[dict]) -> dict:
    """The load run's JSON: setup, idle and per-level figures, and the targets met or not."""
    from persona_agent.core.config import Settings

    worst = max(level["healthz_under_load"]["p99_ms"] for level in levels)
    errors = sum(level["errors"] + level["healthz_failures"] for level in levels)
    mixups = sum(level["mixups"] for level in levels)
    return {
        "machine": machine(load_average_at_start=os.getloadavg()),
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
