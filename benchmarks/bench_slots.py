"""Local model slots benchmark: aggregate tokens/s and calls/s of the in-process model with 1, 2 and 4 slots.

    python benchmarks/bench_slots.py [--slots 1 2 4] [--callers 4] [--rounds 2]
        [--out benchmarks/results/bench_slots.json]
    python benchmarks/bench_scale.py --part slots   (the same, then docs/scale.md's slot table re-rendered)

Loads the real offline model (setting `local_slots` = each count in turn, one model at a time). For each count,
`--callers` threads send requests at once for `--rounds` rounds, of two kinds:
- prompt-heavy: a shared ~600-token instruction block plus a distinct ~200-token text, 16 tokens out
  (what a compile's calls look like: the persona and instructions repeat; prefix reuse per slot counts);
- generation-heavy: a short prompt, 192 tokens out.
Reported per kind and count: wall seconds, calls/s, prompt and generated tokens/s (aggregate over callers),
cached prompt tokens (prefix reuse), and the speedup against one slot. The default `local_slots` should be
the count that measures best on the machine that serves.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
from benchlib import machine, write_json

from persona_agent.core.config import Settings
from persona_agent.core.usage import track_usage
from persona_agent.lm.models import make_lm
from persona_agent.lm.runtime import unload_all

RESULTS = Path(__file__).parent / "results" / "bench_slots.json"
INSTRUCTIONS = " ".join(
    f"Rule {i}: answer as the user's own assistant, keep their preferred tone, never invent facts, and prefer "
    f"short plain sentences over lists unless the user asked for a list (rule {i} of the persona)."
    for i in range(20)
)  # ~600 tokens, the same in every prompt-heavy call
TOPICS = ["rivers", "violins", "glaciers", "lanterns", "harbours", "orchards", "comets", "bridges"]
KINDS = {
    "prompt_heavy": {"max_tokens": 16},
    "generation_heavy": {"max_tokens": 192},
}


def messages(kind: str, caller: int, round_: int) -> list[dict[str, str]]:
    topic = TOPICS[(caller + round_ * 3) % len(TOPICS)]
    if kind == "prompt_heavy":
        text = " ".join(
            f"Note {j} on {topic}: the user wrote about {topic} and asked for a summary." for j in range(12)
        )
        return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": f"{text}\nOne word?"}]
    return [{"role": "user", "content": f"Write a long, detailed story about {topic}."}]


def run_kind(lm: dspy.LM, kind: str, callers: int, rounds: int) -> dict:
    barrier = threading.Barrier(callers)
    totals = {"prompt": 0, "completion": 0, "cached": 0, "calls": 0}
    lock = threading.Lock()

    def one(caller: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            with track_usage() as meter:  # this thread's own call (lm.history is shared by the threads)
                lm(messages=messages(kind, caller, round_), max_tokens=KINDS[kind]["max_tokens"])
            usage = meter.report()
            with lock:
                totals["prompt"] += usage.prompt_tokens
                totals["completion"] += usage.completion_tokens
                totals["cached"] += usage.cached_prompt_tokens
                totals["calls"] += usage.calls

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=callers) as pool:
        list(pool.map(one, range(callers)))
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "calls": totals["calls"],
        "calls_per_second": round(totals["calls"] / seconds, 3),
        "prompt_tokens_per_second": round(totals["prompt"] / seconds, 1),
        "generated_tokens_per_second": round(totals["completion"] / seconds, 1),
        "tokens_per_second": round((totals["prompt"] + totals["completion"]) / seconds, 1),
        "cached_prompt_tokens": totals["cached"],
        "prompt_tokens": totals["prompt"],
    }


def measure(counts: list[int], callers: int, rounds: int) -> dict:
    """Each slot count in turn (one model loaded at a time), both kinds; speedups against the first count."""
    result: dict = {"callers": callers, "rounds": rounds, "runs": []}
    for slots in counts:
        unload_all()  # one model in the process at a time
        lm = make_lm("local", settings=Settings(local_slots=slots), cache=False)
        lm(messages=[{"role": "user", "content": "Hi"}], max_tokens=4)  # load and warm up
        for kind in KINDS:
            run = {"slots": slots, "kind": kind, **run_kind(lm, kind, callers, rounds)}
            result["runs"].append(run)
            print(json.dumps(run), flush=True)
    unload_all()
    for run in result["runs"]:
        base = next(r for r in result["runs"] if r["kind"] == run["kind"] and r["slots"] == counts[0])
        run["speedup"] = round(base["seconds"] / run["seconds"], 2)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    result: dict = {"machine": machine(cores=cores), **measure(args.slots, args.callers, args.rounds)}
    write_json(args.out, result)
    print(f"{'kind':17} {'slots':>5} {'calls/s':>8} {'tokens/s':>9} {'gen tok/s':>9} {'cached':>7} {'speedup':>7}")
    for r in result["runs"]:
        print(
            f"{r['kind']:17} {r['slots']:>5} {r['calls_per_second']:>8} {r['tokens_per_second']:>9} "
            f"{r['generated_tokens_per_second']:>9} {r['cached_prompt_tokens']:>7} {r['speedup']:>7}"
        )


if __name__ == "__main__":
    main()
