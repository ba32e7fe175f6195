"""Scale benchmark: users compiled per minute by `compile --all`'s fan-out, per runner and worker count.

    python benchmarks/bench_scale.py [--part scale|slots|all] [--workers 1 2 4 8 16] [--runners local ray]
        [--per-worker 3] [--out benchmarks/results/bench_scale.json]
    BENCH_SCALE_LATENCY=0.2 (seconds per scripted call)

`--part scale` (the default) uses only the scripted LM. `--part slots` runs `bench_slots.py`'s table (the real
local model with 1, 2 and 4 slots, a prompt-heavy and a generation-heavy call side by side; minutes of CPU) into
`benchmarks/results/bench_slots.json`; `--part all` runs both. Each part re-renders docs/scale.md's tables from
the JSON (`scale_report.py`).

The LM is the scripted one (`persona_agent.testing.ScriptedLM`, the PersonaAligner script of the tests) with
a fixed `--latency` per call (a sleep: a hosted model's network wait), so the figures measure the fan-out, not a
model. Each run compiles its own fresh users (`--per-worker` x workers, 3 interactions each) in one workspace
(DuckDB + MLflow sqlite in a temporary home), with the default `CompileOptions`. Reported per run: users per
minute, LM calls per compile, the driver's write throughput (commits per second: registry row and promote, with
the MLflow run, prompt version and aliases handed to the default `FANOUT_TRACKING_PROCESSES` tracking processes,
warmed before any timing; the end-to-end figures wait for them), and the scaling efficiency (users/min over workers x the 1-worker figure), both for the workers alone
(`workers_only_per_minute`: the same optimizer jobs through the runner with nothing committed, on other fresh
users; with the local runner also the process's CPU seconds per compile) and end to end (`users_per_minute`:
`compile_all`, the driver committing as results arrive, MLflow on sqlite here).

Ray runs locally with `num_cpus` = this machine's cores and each task reserving cores/workers CPUs (the tasks
wait on the LM, as with a hosted model); all its worker processes are started and warmed before timing (one
untimed compile job each, after every process has checked in).
Ray workers embed the snapshot's interactions with a hashing embedder defined here, so sixteen processes do not
each load MiniLM (the scripted agent never searches memory; the driver's store uses the real embedder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import bench_slots
import numpy as np
import scale_report
from benchlib import machine, write_json

from persona_agent.compiling import CompileOptions, plan_compile
from persona_agent.core.config import Settings
from persona_agent.fanout import compile_all, snapshot_of
from persona_agent.fanout_worker import WorkerSetup, optimize_plan, optimize_snapshot
from persona_agent.runners import Job, LocalRunner, RayRunner, run_jobs
from persona_agent.testing import ScriptedLM
from persona_agent.workspace import Workspace

REACT = "request, trajectory -> next_thought, next_tool_name, next_tool_args"
ANSWER = "request, trajectory -> response"
LOSS = "persona, request, simulated_response, ground_truth_response -> matches, critique"
GRADIENT = "persona, losses -> gradient"
UPDATE = "persona, gradient, max_chars -> new_persona"
NEW_PERSONA = "## User profile\nWants very concise answers.\n\n## Agent instructions\nAnswer in two words."
LATENCY = float(os.environ.get("BENCH_SCALE_LATENCY", "0.2"))


def scripted_lm() -> ScriptedLM:
    """The tests' PersonaAligner script, every call taking LATENCY seconds (module-level: Ray pickles it)."""

    def slow(answer: dict):
        def call(_call) -> dict:
            time.sleep(LATENCY)
            return answer

        return call

    def update(call) -> dict:
        """A persona one round newer than the one given, so a re-compile makes a new version too."""
        time.sleep(LATENCY)
        return {"new_persona": f"{NEW_PERSONA}\n- round {call.inputs.get('persona', '').count('- round') + 1}"}

    return ScriptedLM(
        {
            REACT: slow({"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}}),
            ANSWER: slow({"response": "A long and detailed answer."}),
            LOSS: slow({"matches": False, "critique": "The user wanted a much shorter answer."}),
            GRADIENT: slow({"gradient": "- the user wants concise answers"}),
            UPDATE: update,
        }
    )


class HashEmbedder:
    """Deterministic unit vectors from a text's hash: a cheap embedder for Ray workers that never search."""

    name = "bench-hash-384"
    dim = 384

    def encode(self, texts) -> np.ndarray:
        rows = [np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:12], 16)) for t in texts]
        v = np.stack([r.standard_normal(self.dim) for r in rows]).astype(np.float32) if rows else np.zeros((0, 384))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32) if len(v) else v.astype(np.float32)


def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


def add_users(workspace: Workspace, prefix: str, count: int) -> list[str]:
    users = [f"{prefix}-{i:03d}" for i in range(count)]
    records = [(user, {"query": f"question {j} from {user}", "response": "ok"}) for user in users for j in range(3)]
    workspace.store.ingest(records)
    return users


def optimizer_jobs(workspace: Workspace, runner, users: list[str], setup: WorkerSetup) -> list[Job]:
    """The optimizer jobs `compile_all` would run for these users, planned up front."""
    plans = [plan_compile(workspace, user, CompileOptions()) for user in users]
    if runner.name == "local":
        return [Job(p.user_id, optimize_plan, (workspace, p)) for p in plans]
    return [Job(p.user_id, optimize_snapshot, (snapshot_of(workspace, p), setup)) for p in plans]


def warm_worker(folder: str, workers: int, snapshot, setup: WorkerSetup):
    """A Ray warm-up task: wait until `workers` processes have checked in (a file each in `folder`, so every
    worker process starts, not only the first to come up), then run one real compile job there."""
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 300
    while len(os.listdir(folder)) < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    return optimize_snapshot(snapshot, setup)


def make_runner(name: str, workers: int, cores: int, workspace: Workspace, setup: WorkerSetup):
    """A runner; Ray's worker processes are all started and warmed (one real job each, untimed) first."""
    if name == "local":
        return LocalRunner(workers)
    runner = RayRunner(workers, num_cpus=cores, cpus_per_job=cores / workers)
    users = add_users(workspace, f"warm-w{workers}", workers)
    with tempfile.TemporaryDirectory() as folder:
        snapshots = [snapshot_of(workspace, plan_compile(workspace, u, CompileOptions())) for u in users]
        warm = [Job(s.user_id, warm_worker, (folder, workers, s, setup)) for s in snapshots]
        list(run_jobs(runner, warm, in_flight=workers, retries=0))
        checked_in = len(os.listdir(folder))
    if checked_in < workers:
        raise RuntimeError(f"only {checked_in} of {workers} Ray worker processes started")
    return runner


def workers_only(workspace: Workspace, runner, users: list[str], setup: WorkerSetup) -> tuple[float, float | None]:
    """Users per minute through the runner alone (the same optimizer jobs as `compile_all`, nothing committed),
    and CPU seconds per compile when the workers are this process's threads."""
    jobs = optimizer_jobs(workspace, runner, users, setup)
    started, cpu = time.perf_counter(), time.process_time()
    done = sum(o.ok for o in run_jobs(runner, jobs, retries=0))
    per_minute = round(60 * done / (time.perf_counter() - started), 1)
    return per_minute, round((time.process_time() - cpu) / done, 3) if runner.name == "local" and done else None


def bench_one(workspace: Workspace, name: str, workers: int, per_worker: int, cores: int) -> dict:
    users = add_users(workspace, f"{name}-w{workers}", per_worker * workers)
    alone = add_users(workspace, f"{name}-alone-w{workers}", per_worker * workers)
    setup = WorkerSetup(workspace.settings, lm=scripted_lm, embedder=hash_embedder)
    runner = make_runner(name, workers, cores, workspace, setup)
    try:
        workers_per_minute, cpu_per_compile = workers_only(workspace, runner, alone, setup)
        started = time.perf_counter()
        report = compile_all(workspace, CompileOptions(), runner, users=users, retries=0, setup=setup)
        seconds = time.perf_counter() - started
        again = recompile(workspace, runner, users, setup)
    finally:
        runner.close()
    done = len(report.compiled)
    prompt = sum(r.usage.get("prompt_tokens", 0) for r in report.compiled)
    completion = sum(r.usage.get("completion_tokens", 0) for r in report.compiled)
    return {
        "workers_only_per_minute": workers_per_minute,
        "runner": name,
        "workers": workers,
        "users": len(users),
        "compiled": done,
        "failed": len(report.failed),
        "errors": sorted(set(report.failed.values()))[:3],
        "seconds": round(seconds, 2),
        "users_per_minute": round(60 * done / seconds, 1),
        "lm_calls_per_compile": round(report.lm_calls / done, 2) if done else None,
        "tokens_per_compile": round(report.tokens / done) if done else None,
        "prompt_tokens_per_compile": round(prompt / done) if done else None,
        "completion_tokens_per_compile": round(completion / done) if done else None,
        "cpu_seconds_per_compile": cpu_per_compile,
        "driver_write_seconds": round(report.write_seconds, 2),
        "driver_commits_per_second": round(done / report.write_seconds, 1) if report.write_seconds else None,
        **again,
    }


def recompile(workspace: Workspace, runner, users: list[str], setup: WorkerSetup) -> dict:
    """The same users again, each with one new interaction: the test-time re-compile of users who have a
    compiled version (each makes a new version: one run and one prompt version a commit, where a first compile
    also logs version 0's)."""
    workspace.store.ingest([(u, {"query": f"one more question from {u}", "response": "ok"}) for u in users])
    started = time.perf_counter()
    report = compile_all(workspace, CompileOptions(), runner, users=users, retries=0, setup=setup)
    seconds = time.perf_counter() - started
    done = len(report.compiled)
    return {
        "recompiled": done,
        "recompile_seconds": round(seconds, 2),
        "recompile_users_per_minute": round(60 * done / seconds, 1),
        "recompile_commits_per_second": round(done / report.write_seconds, 1) if report.write_seconds else None,
    }


def add_ratios(runs: list[dict], first: int) -> None:
    """Speedup and efficiency (users/min over workers x the smallest run's per-worker figure), per runner."""
    for run in runs:
        base = next(r for r in runs if r["runner"] == run["runner"] and r["workers"] == first)
        ideal = base["users_per_minute"] * run["workers"] / base["workers"]
        run["speedup"] = round(run["users_per_minute"] / base["users_per_minute"], 2)
        run["efficiency"] = round(run["users_per_minute"] / ideal, 2)
        ideal_workers = base["workers_only_per_minute"] * run["workers"] / base["workers"]
        run["workers_speedup"] = round(run["workers_only_per_minute"] / base["workers_only_per_minute"], 2)
        run["workers_efficiency"] = round(run["workers_only_per_minute"] / ideal_workers, 2)
        if "recompile_users_per_minute" in run:
            ideal_again = base["recompile_users_per_minute"] * run["workers"] / base["workers"]
            run["recompile_speedup"] = round(run["recompile_users_per_minute"] / base["recompile_users_per_minute"], 2)
            run["recompile_efficiency"] = round(run["recompile_users_per_minute"] / ideal_again, 2)


def run_scale(args: argparse.Namespace, cores: int) -> dict:
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as home:
        os.environ["PERSONA_AGENT_HOME"] = home
        with Workspace(Settings(home=Path(home)), lm=scripted_lm()) as workspace:
            workspace.tracker  # noqa: B018  (MLflow opened and migrated before any timing)
            warm = add_users(workspace, "warm", 2)  # the tracking process spawned and warm before any timing
            compile_all(workspace, CompileOptions(), LocalRunner(2), users=warm, retries=0)
            for name in args.runners:
                for workers in args.workers:
                    runs.append(bench_one(workspace, name, workers, args.per_worker, cores))
                    print(json.dumps(runs[-1]), flush=True)
    add_ratios(runs, min(args.workers))
    return {
        "benchmark": "bench_scale",
        "command": "python benchmarks/bench_scale.py " + " ".join(sys.argv[1:]),
        "lm": f"scripted, {LATENCY * 1000:.0f} ms per call",
        "latency_seconds": LATENCY,
        "options": CompileOptions().model_dump(),
        "machine": machine(cores=cores, platform=platform.platform()),
        "prices": scale_report.prices(),
        "projection": scale_report.ASSUMPTIONS,
        "runs": runs,
    }


def print_scale(runs: list[dict]) -> None:
    print(
        "runner  workers  workers-only/min  speedup  efficiency  end-to-end/min  speedup  efficiency  commits/s"
        "  recompile/min  speedup"
    )
    for r in runs:
        print(
            f"{r['runner']:7} {r['workers']:>7} {r['workers_only_per_minute']:>17} {r['workers_speedup']:>8} "
            f"{r['workers_efficiency']:>11} {r['users_per_minute']:>15} {r['speedup']:>8} {r['efficiency']:>11} "
            f"{r['driver_commits_per_second']!s:>10} {r['recompile_users_per_minute']:>14} {r['recompile_speedup']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["scale", "slots", "all"], default="scale")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--runners", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    parser.add_argument("--per-worker", type=int, default=3, help="users per worker in each run")
    parser.add_argument("--out", type=Path, default=scale_report.RESULTS / "bench_scale.json")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.part in ("scale", "all"):
        result = run_scale(args, cores)
        write_json(args.out, result)
        print_scale(result["runs"])
    if args.part in ("slots", "all"):
        bench_slots.main([])  # the real local model: 1, 2, 4 slots into results/bench_slots.json
    scale_report.update_docs(args.out.parent)


if __name__ == "__main__":
    main()
