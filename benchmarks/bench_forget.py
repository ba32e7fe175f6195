"""Forget benchmark: the cost of taking one user's bytes off the disk, on stores of 100k and 1M rows.

    python benchmarks/bench_forget.py [--sizes 100000 1000000] [--out benchmarks/results/bench_forget.json]

Each store holds users of 1,000 rows (random 384-d unit vectors given to `ingest`, so MiniLM is not run; a
query of about 130 characters). One user is forgotten: the DELETE (one transaction) and the compaction that
rewrites the file (`MemoryStore.compact`, what the timer and close run) are timed apart, while a thread reads
(reads go on during the copy and wait only for the swap: their longest wait is reported). That no byte of the user
is left is shown by tests/persona_agent/test_forget.py (a grep at this scale proves nothing: DuckDB compresses
the strings of checkpointed blocks, so a marker is not found verbatim even before the delete).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import duckdb
import numpy as np
from benchlib import machine, write_json  # benchmarks/benchlib.py, shared by the scripts

from persona_agent.core.config import Settings
from persona_agent.stores import MemoryStore, SentenceTransformerEmbedder

PER_USER = 1000
FILLER = "a question about films, music and the weather, long enough to look like a real user's request"


def unit(rng: np.random.Generator, n: int, dim: int = 384) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def size_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6, 1)


def bench(total: int, workdir: Path, embedder) -> dict:
    rng = np.random.default_rng(total)
    folder = workdir / f"store-{total}"
    folder.mkdir()
    settings = Settings(compaction_delay_seconds=3600)  # the benchmark compacts by hand
    users = [f"user-{i}" for i in range(total // PER_USER)]
    target = users[len(users) // 2]
    result: dict = {"rows": total, "users": len(users)}
    with MemoryStore(folder / "memory.duckdb", embedder=embedder, settings=settings) as store:
        t = time.perf_counter()
        for start in range(0, len(users), 50):
            records = [
                (user, {"query": f"{user} row {i}: {FILLER}", "response": f"the answer to row {i}"})
                for user in users[start : start + 50]
                for i in range(PER_USER)
            ]
            store.ingest(records, embeddings=unit(rng, len(records)))
        store.cursor().execute("CHECKPOINT")
        result["load_s"] = round(time.perf_counter() - t, 1)
        result["files_mb_before"] = size_mb(folder)
        t = time.perf_counter()
        report = store.forget(target)
        result["delete_s"] = round(time.perf_counter() - t, 3)
        result["rows_deleted"] = report.interactions
        latencies: list[float] = []
        done = threading.Event()

        def read() -> None:  # a reader on another thread: how long does the compaction make it wait?
            while not done.is_set():
                t = time.perf_counter()
                store.count(users[0])
                latencies.append(time.perf_counter() - t)

        reader = threading.Thread(target=read)
        reader.start()
        t = time.perf_counter()
        store.compact()
        result["compact_s"] = round(time.perf_counter() - t, 2)
        done.set()
        reader.join()
        result["reads_during_compaction"] = len(latencies)
        result["read_max_ms_during_compaction"] = round(max(latencies) * 1e3, 1)
        result["files_mb_after"] = size_mb(folder)
        assert store.count() == total - PER_USER
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_forget.json")
    args = parser.parse_args()

    embedder = SentenceTransformerEmbedder()
    report: dict = {
        "machine": machine(duckdb=duckdb.__version__, load_average_at_start=os.getloadavg()),
        "forget": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            res = bench(size, Path(tmp), embedder)
            print(json.dumps(res, indent=2), flush=True)
            report["forget"].append(res)
    report["command"] = "python benchmarks/bench_forget.py --sizes " + " ".join(map(str, args.sizes))
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
