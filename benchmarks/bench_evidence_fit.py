"""How much a user's own history can teach the planned agent's evidence weights (per-user alignment's ceiling).

The planned agent answers from three distributions (the model's, the nearest past items' vote, the user's label
prior) combined under per-user weights that alignment fits on the user's latest interactions. This measures, on
history only (never an evaluation query), whether such a fit would help the next answer:

1. `--collect` (the local LM, ~7 s a call): for dev users (the seed-1 sample minus the seed-0 evaluation sample),
   the planned agent (no persona, the model alone) answers each of the user's `--window` latest
   items before their first query, each at its own time (memory holds only what precedes it); each answer's
   evidence and the truth are appended to a records file outside the repository (labels and probabilities, hashed
   user keys: no data text).
2. The analysis (no LM, seconds): prequentially, per user, weights fitted on the items before item i answer item i,
   against the model alone: better / worse answers and a two-sided sign test, for the fitting rules tried
   (minimum records, with and without the leave-one-out gate alignment uses); fixed combinations; and weights
   fitted on the other users' items (a population fit, leave one user out); and the weights an agent starts
   from (`default_weights` of the task's labels) against the model alone and the user's prior alone. With
   `--data`, the number of items each evaluation user has before their first query (what alignment can learn
   from) is added. Records collected before the prior was smoothed are re-smoothed from their label counts.

    python benchmarks/bench_evidence_fit.py --collect --task lamp2m --users 14 --data DIR   # hours of LM at most
    python benchmarks/bench_evidence_fit.py --data DIR        # the analysis of every task collected -> JSON

Writes benchmarks/results/bench_evidence_fit.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import statistics
import sys
import tempfile
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from benchlib import data_folder, machine, write_json  # benchmarks/benchlib.py, shared by the scripts

from persona_agent.core.config import Settings
from persona_agent.core.records import user_key
from persona_agent.evaluation.head_to_head import sign_test
from persona_agent.optimizers.evidence_fit import GRID, best_weights, fit_weights, hard_score
from persona_agent.programs.evidence import Evidence, EvidenceWeights, default_weights, label_prior

RESULTS = Path(__file__).parent / "results" / "bench_evidence_fit.json"
TASKS = ("lamp2n", "lamp2m", "lamp3")
DEV_SEED, REPORT_SEED, REPORT_USERS = 1, 0, 100
FIXED = {
    "model alone": EvidenceWeights(1, 0, 0),
    "vote alone": EvidenceWeights(0, 1, 0),
    "prior alone": EvidenceWeights(0, 0, 1),
    "model + vote": EvidenceWeights(1, 1, 0),
    "model + vote + prior": EvidenceWeights(1, 1, 1),
    "model + prior": EvidenceWeights(1, 0, 1),
}
RULES = ((3, True), (6, True), (3, False), (6, False))  # (minimum records, leave-one-out gate)


def records_path(task: str) -> Path:
    """Outside the repository, beside the offline model (the user cache, not the working directory)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "persona_agent" / "bench" / f"evidence_fit-{task}.jsonl"


def _dev_users(setup: Any, data: Path) -> tuple[list[Any], Any]:
    from persona_agent.evaluation.run_config import sample_users

    dataset = setup.build(data, queries_per_user=3, min_profile=3)
    report = {u.user_id for u in sample_users(dataset, REPORT_USERS, REPORT_SEED)}
    return [u for u in sample_users(dataset, len(dataset.users), DEV_SEED) if u.user_id not in report], dataset


def collect(task: str, n_users: int, window: int, data: Path) -> None:
    """Append the planned agent's evidence on each dev user's `window` latest pre-query items (resumes by user)."""
    import dspy

    from persona_agent.evaluation.persist import StateCache
    from persona_agent.evaluation.plan import task_setup
    from persona_agent.evaluation.run_config import RunConfig
    from persona_agent.evaluation.user_setup import UserSetup, alignment_examples
    from persona_agent.lm.models import adapter_for, make_lm
    from persona_agent.optimizers.simulation import Simulation
    from persona_agent.stores.embeddings import SentenceTransformerEmbedder

    setup = task_setup(task)
    users, _ = _dev_users(setup, data)
    path = records_path(task)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line).get("user") for line in path.open()} if path.exists() else set()
    config = RunConfig(
        task=task, users=n_users, lm="local", seed=DEV_SEED, k=5, data=data, out=Path(tempfile.mkdtemp())
    )
    embedder = SentenceTransformerEmbedder(Settings().embedder)
    knowledge = None
    if setup.knowledge:
        from persona_agent.evaluation.builders import data_path
        from persona_agent.evaluation.moviekb import movie_knowledge_base

        knowledge = movie_knowledge_base(data_path(data), Settings().resolved_cache_dir / "eval", embedder)
    run = types.SimpleNamespace(  # what UserSetup reads of an evaluation run's shared state
        config=config, setup=setup, state=StateCache(Path(tempfile.mkdtemp())), done={}, embedder=embedder,
        knowledge=knowledge, align_threads=1, status=lambda text: None,
    )  # fmt: skip
    lm = make_lm("local")
    argv = ["DIR" if i and sys.argv[i - 1] == "--data" else arg for i, arg in enumerate(sys.argv)][1:]
    command = shlex.join(["python", "benchmarks/bench_evidence_fit.py", *argv])  # the data folder's path left out
    with dspy.context(lm=lm, adapter=adapter_for(lm)), path.open("a") as out:
        meta = {"kind": "meta", "command": command, "date": datetime.now(UTC).date().isoformat(), "window": window}
        out.write(json.dumps(meta) + "\n")  # one per invocation: the records say every command that made them
        for user in users[:n_users]:
            key = user_key(setup.task.name, user.user_id)
            if key in done:
                continue
            user_setup = UserSetup(run, user)
            user_setup.open_memory()
            agent = user_setup.program("planned_no_persona", None, EvidenceWeights())
            records = Simulation(num_threads=1).simulate(agent, alignment_examples(user, setup, window), None)
            for position, record in enumerate(records):
                row = {"user": key, "pos": position, "evidence": record.get("evidence")}
                out.write(json.dumps({**row, "gold": str(record["ground_truth"][setup.output_field])}) + "\n")
            out.flush()
            user_setup.close()
            print(f"{task} {key}: {len(records)} items", flush=True)


def _split(diffs: list[float]) -> dict[str, Any]:
    better, worse = sum(d > 1e-9 for d in diffs), sum(d < -1e-9 for d in diffs)
    return {"items": len(diffs), "better": better, "worse": worse, "p": round(sign_test(better, worse), 4)}


def current_prior(evidence: Evidence) -> Evidence:
    """`evidence` with its prior as today's `label_prior` makes it. An unsmoothed prior (some label at 0) is
    the user's label counts over their total: the least total that makes every count whole recovers them."""
    if all(value > 0 for value in evidence.prior.values()):
        return evidence
    for total in range(1, 10_001):
        counts = {label: evidence.prior.get(label, 0.0) * total for label in evidence.labels}
        if all(abs(c - round(c)) < 1e-6 for c in counts.values()):
            past = [label for label, c in counts.items() for _ in range(round(c))]
            return dataclasses.replace(evidence, prior=label_prior(past, evidence.labels))
    raise ValueError(f"no label counts give the prior {evidence.prior}")


def analyse(path: Path) -> dict[str, Any]:
    """The analysis of one task's records (module docstring, step 2)."""
    lines = [json.loads(line) for line in path.open()]
    metas = [r for r in lines if r.get("kind") == "meta"]
    by_user: dict[str, list[tuple[int, Evidence, str]]] = {}
    for r in lines:
        if r.get("kind") != "meta" and r.get("evidence"):
            evidence = current_prior(Evidence.from_dict(r["evidence"]))
            by_user.setdefault(r["user"], []).append((r["pos"], evidence, r["gold"]))
    users = {u: [(e, g) for _, e, g in sorted(v, key=lambda x: x[0])] for u, v in by_user.items()}
    items = [x for v in users.values() for x in v]
    model_alone = FIXED["model alone"]

    def versus(weights_for: Any) -> dict[str, Any]:
        return _split([hard_score(e, weights_for(e), g) - hard_score(e, model_alone, g) for e, g in items])

    fixed = {name: round(statistics.mean(hard_score(e, w, g) for e, g in items), 3) for name, w in FIXED.items()}
    rules = {}
    for minimum, gate in RULES:
        diffs = []
        for v in users.values():
            for i in range(1, len(v)):
                if gate:
                    weights = fit_weights(v[:i], model_alone, min_records=minimum).weights
                else:
                    weights = best_weights(v[:i], model_alone, GRID, True) if i >= minimum else model_alone
                e, g = v[i]
                diffs.append(hard_score(e, weights, g) - hard_score(e, model_alone, g))
        rules[f"min {minimum} records, {'leave-one-out gate' if gate else 'no gate'}"] = _split(diffs)
    start = default_weights(items[0][0].labels) if items else EvidenceWeights()
    prior_alone = FIXED["prior alone"]
    starting = {
        "weights": start.to_dict(),
        "vs_model_alone": versus(lambda e: start),
        "vs_prior_alone": _split([hard_score(e, start, g) - hard_score(e, prior_alone, g) for e, g in items]),
    }
    population = []
    for u, v in users.items():
        weights = best_weights([x for k, w in users.items() if k != u for x in w], model_alone, GRID, True)
        population += [hard_score(e, weights, g) - hard_score(e, model_alone, g) for e, g in v]
    return {
        "records": [{key: m.get(key) for key in ("command", "date", "window")} for m in metas],
        "users": len(users),
        "items": len(items),
        "score": "accuracy" if not (items and items[0][0].ordinal) else "minus the absolute rating error",
        "mean_score": fixed,
        "fixed_vs_model_alone": {
            name: versus(lambda e, w=w: w) for name, w in FIXED.items() if name not in ("model alone",)
        },
        "per_user_fit_vs_model_alone": rules,
        "population_fit_vs_model_alone": _split(population),
        "default_weights": starting,
    }


def history(task: str, data: Path) -> dict[str, Any]:
    """Items before the first query of the evaluation's seed-0 sample: what a user's alignment can learn from."""
    from persona_agent.evaluation.plan import task_setup
    from persona_agent.evaluation.run_config import sample_users

    dataset = task_setup(task).build(data, queries_per_user=3, min_profile=3)
    counts = [len(u.first_alignment_batch(10_000)) for u in sample_users(dataset, REPORT_USERS, REPORT_SEED)]
    return {
        "users": len(counts),
        "median": statistics.median(counts),
        "at_least_9": sum(c >= 9 for c in counts),  # enough for alignment's batch of 3 and its check set of 6
        "min": min(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collect", action="store_true", help="run the LM on --task's dev users first")
    parser.add_argument("--task", choices=TASKS)
    parser.add_argument("--users", type=int, default=14)
    parser.add_argument("--window", type=int, default=15)
    parser.add_argument("--data", type=Path, default=None)
    args = parser.parse_args()
    if args.collect:
        if args.task is None:
            parser.error("--collect needs --task")
        collect(args.task, args.users, args.window, data_folder(args.data))
    tasks = [t for t in TASKS if records_path(t).exists()]
    if not tasks:
        raise SystemExit("no records: run with --collect --task TASK first")
    report = {
        "command": "python benchmarks/bench_evidence_fit.py" + (" --data DIR" if args.data else ""),
        "date": datetime.now(UTC).date().isoformat(),
        "machine": machine(),
        "dev_users": f"seed-{DEV_SEED} sample minus the seed-{REPORT_SEED} evaluation sample of {REPORT_USERS}",
        "tasks": {t: analyse(records_path(t)) for t in tasks},
    }
    if args.data or Settings().data_dir:
        folder = data_folder(args.data)
        for t in tasks:
            report["tasks"][t]["history_before_first_query"] = history(t, folder)
    write_json(RESULTS, report)
    print(json.dumps({t: v["per_user_fit_vs_model_alone"] for t, v in report["tasks"].items()}, indent=1))


if __name__ == "__main__":
    main()
