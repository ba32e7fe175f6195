"""Memory-store benchmark: ingest throughput against raw embedding, and per-user search latency against
a raw FAISS search over that user's vectors alone. Both sides run in the same process, interleaved.

    python benchmarks/bench_memory.py [--texts 3000] [--sizes 100000 1000000] [--out benchmarks/results/bench_memory.json]

Ingest uses real HuffPost text (headline + short description, authors as users) from the data folder (`--data` or PERSONA_AGENT_DATA_DIR);
search uses random unit vectors (the scale part does not depend on the text).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import faiss
import numpy as np
from benchlib import data_folder, machine, write_json  # benchmarks/benchlib.py, shared by the scripts

from persona_agent.demo_huffpost import HUFFPOST_FILE
from persona_agent.stores import MemoryStore, SentenceTransformerEmbedder


def author_id(authors: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", authors.lower()).strip("-")[:128] or "anonymous"


def load_texts(path: Path, n: int) -> list[tuple[str, str]]:
    out = []
    with path.open() as f:
        for line in f:
            rec = json.loads(line)
            text = f"{rec['headline']}. {rec['short_description']}".strip()
            if text and rec["authors"]:
                out.append((author_id(rec["authors"]), text))
            if len(out) == n:
                break
    return out


def bench_ingest(texts: list[tuple[str, str]], batch: int, workdir: Path) -> dict:
    embedder = SentenceTransformerEmbedder()
    model = embedder._load()
    model.encode(["warm up"] * batch, batch_size=batch)
    raw_s = store_s = 0.0
    with MemoryStore(workdir / "ingest.duckdb", embedder=embedder) as store:
        for start in range(0, len(texts), batch):
            chunk = texts[start : start + batch]
            t = time.perf_counter()
            model.encode([x for _, x in chunk], batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
            raw_s += time.perf_counter() - t
            t = time.perf_counter()
            store.ingest([(user, {"query": text}) for user, text in chunk])
            store_s += time.perf_counter() - t
        n_users = len(store.users())
    n = len(texts)
    return {
        "texts": n,
        "users": n_users,
        "batch": batch,
        "mean_chars": round(float(np.mean([len(x) for _, x in texts])), 1),
        "raw_encode_texts_per_s": round(n / raw_s, 1),
        "store_ingest_texts_per_s": round(n / store_s, 1),
        "ratio": round(raw_s / store_s, 3),
    }


def unit(rng: np.random.Generator, n: int, dim: int = 384) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def percentiles(samples: list[float]) -> dict:
    us = np.array(samples) * 1e6
    return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1)}


def bench_search(total: int, per_user: tuple[int, ...], queries: int, workdir: Path, embedder) -> dict:
    rng = np.random.default_rng(total)
    path = workdir / f"search-{total}.duckdb"
    results: dict = {"rows_in_store": total}
    with MemoryStore(path, embedder=embedder) as store:
        # Target users first, then fillers of 1,000 rows each, inserted in interleaved chunks.
        plan = [(f"target-{n}", n) for n in per_user]
        filler = total - sum(per_user)
        plan += [(f"filler-{i}", 1000) for i in range(filler // 1000)]
        vectors_of: dict[str, np.ndarray] = {}
        t = time.perf_counter()
        pending: list[tuple[str, int]] = []
        for user, n in plan:
            pending.append((user, n))
            if sum(c for _, c in pending) >= 50_000 or user == plan[-1][0]:
                records, vecs = [], []
                for u, c in pending:
                    v = unit(rng, c)
                    if u.startswith("target"):
                        vectors_of[u] = v
                    records += [(u, {"query": f"{u} row {i}"}) for i in range(c)]
                    vecs.append(v)
                store.ingest(records, embeddings=np.concatenate(vecs))
                pending = []
        results["load_s"] = round(time.perf_counter() - t, 1)
        results["rows_loaded"] = store.count()
        for n in per_user:
            user = f"target-{n}"
            qs = unit(rng, queries)
            t = time.perf_counter()
            store.search(user, vector=qs[0], k=10)
            cold = time.perf_counter() - t
            raw = faiss.IndexFlatIP(384)
            raw.add(vectors_of[user])
            threads = faiss.omp_get_max_threads()
            ours, base = [], []
            for q in qs:  # interleaved, so both sides see the same machine state
                t = time.perf_counter()
                hits = store.search(user, vector=q, k=10)
                ours.append(time.perf_counter() - t)
                faiss.omp_set_num_threads(1)  # the baseline gets the same single-thread setting the store uses
                t = time.perf_counter()
                raw.search(q.reshape(1, -1), 10)
                base.append(time.perf_counter() - t)
                faiss.omp_set_num_threads(threads)
                assert len(hits) == 10
            results[f"user_{n}_rows"] = {
                "store_search": percentiles(ours),
                "raw_faiss_flat": percentiles(base),
                "p50_ratio": round(float(np.percentile(ours, 50) / np.percentile(base, 50)), 2),
                "first_search_ms_incl_partition_build": round(cold * 1e3, 2),
            }
    path.unlink(missing_ok=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: PERSONA_AGENT_DATA_DIR)")
    parser.add_argument("--texts", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_memory.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = {
            "machine": machine(faiss=faiss.__version__, load_average_at_start=os.getloadavg()),
            "ingest": bench_ingest(load_texts(data_folder(args.data) / HUFFPOST_FILE, args.texts), args.batch, work),
        }
        print(json.dumps(report["ingest"], indent=2), flush=True)
        embedder = SentenceTransformerEmbedder()
        report["search"] = []
        for size in args.sizes:
            res = bench_search(size, (1000, 10_000), args.queries, work, embedder)
            print(json.dumps(res, indent=2), flush=True)
            report["search"].append(res)

    def shown(value: object) -> str:  # paths relative to the working directory: the JSON names no machine's folders
        if isinstance(value, list):
            return " ".join(map(str, value))
        return os.path.relpath(value) if isinstance(value, Path) and value.is_absolute() else str(value)

    report["command"] = "python benchmarks/bench_memory.py " + " ".join(
        f"--{k} {shown(v)}" for k, v in vars(args).items() if k != "data"
    )
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
