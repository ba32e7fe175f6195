"""Persona alignment on real users: PersonaAligner vs GEPA vs COPRO at the same LM budget.

For each user (LaMP-2N-style HuffPost authors with the longest histories), memory holds only the
articles before the user's first query; the initial persona comes from a profile summarised from
that memory; the alignment batch is the n articles just before the first query; the held-out set is
the user's next queries. We report exact-match accuracy on the batch and on the held-out queries,
before and after each strategy's compile, with LM calls, tokens and seconds. GEPA and COPRO search as
published (`constrain=False`), as in the evaluation and the committed results.

    python benchmarks/bench_align.py --users 10 [--lm local] [--strategies persona_aligner gepa copro]

Results are appended per (user, strategy) to benchmarks/results/bench_align.jsonl as they finish, so an
interrupted run resumes where it stopped; the JSON summary and Markdown table are rebuilt each time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
from benchlib import data_folder, machine  # benchmarks/benchlib.py, shared by the scripts

from persona_agent.core.config import Settings
from persona_agent.core.records import EvalUser
from persona_agent.core.usage import track_usage
from persona_agent.evaluation import build_huffpost_categories
from persona_agent.lm.models import adapter_for, make_lm
from persona_agent.optimizers import PersonaAligner, exact_match
from persona_agent.optimizers.factory import STRATEGIES, optimizer_for
from persona_agent.optimizers.trainset import AS_OF
from persona_agent.programs import Persona, PersonaAgent, ProfileBuilder, init_persona
from persona_agent.signatures import CategorizeArticle
from persona_agent.stores import MemoryStore, Profile, SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def example(item: Any) -> dspy.Example:
    return dspy.Example(article=item.input, category=item.output, **{AS_OF: item.timestamp}).with_inputs("article")


def evaluate(agent: PersonaAgent, examples: list[dspy.Example]) -> dict[str, Any]:
    with track_usage() as usage:
        preds = []
        for ex in examples:
            try:
                pred = agent(article=ex.article, as_of=ex[AS_OF])
                preds.append({"prediction": pred.category, "gold": ex.category, "score": exact_match(ex, pred)})
            except (ValueError, dspy.utils.exceptions.AdapterParseError) as exc:  # a failed example scores 0
                preds.append({"prediction": None, "gold": ex.category, "score": 0.0, "error": str(exc)[:200]})
    report = usage.report()
    return {
        "accuracy": statistics.fmean(p["score"] for p in preds) if preds else None,
        "predictions": preds,
        "usage": {"calls": report.calls, "tokens": report.total_tokens, "seconds": round(report.seconds, 1)},
    }


def gradient_of(trace: dict) -> str | None:
    steps = trace.get("iterations") or []
    return next((s.get("gradient") for s in steps if s.get("gradient")), None)


# Texts an LM wrote from the user's data (profiles, personas, gradients) can quote the data itself (the
# 1.5B model's profile of one author was a list of their headlines), so they go to a sidecar file that is
# never committed; the committed JSONL holds labels, scores and costs only, and names users by key
# (`EvalUser.key`), not by their dataset ids (bylines).
PRIVATE = ("user_id", "profile", "persona", "persona_before", "persona_after", "gradient")


def private_path(path: Path) -> Path:
    return path.with_name(path.stem + ".private.jsonl")


def load_done(path: Path) -> dict[tuple[str, str], dict]:
    done: dict[tuple[str, str], dict] = {}
    for file in (path, private_path(path)):
        if file.exists():
            for line in file.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    done.setdefault((rec["user"], rec["strategy"]), {}).update(rec)
    return done


def append(path: Path, record: dict) -> None:
    public = {k: v for k, v in record.items() if k not in PRIVATE}
    private = {k: record[k] for k in ("user", "strategy", *PRIVATE) if k in record}
    with path.open("a") as f:
        f.write(json.dumps(public, default=str) + "\n")
    with private_path(path).open("a") as f:
        f.write(json.dumps(private, default=str) + "\n")


def summarize(records: list[dict], meta: dict) -> tuple[dict, str]:
    by_strategy: dict[str, list[dict]] = {}
    for rec in records:
        if rec["strategy"] != "initial":
            by_strategy.setdefault(rec["strategy"], []).append(rec)
    base = {r["user"]: r for r in records if r["strategy"] == "initial"}
    rows, table = {}, []
    for strategy, recs in sorted(by_strategy.items()):
        users = [r["user"] for r in recs if r["user"] in base]
        if not users:
            continue

        def mean(values):
            values = [v for v in values if v is not None]
            return round(statistics.fmean(values), 3) if values else None

        row = {
            "users": len(users),
            "batch_before": mean(base[u]["batch"]["accuracy"] for u in users),
            "batch_after": mean(r["batch_after"]["accuracy"] for r in recs),
            "heldout_before": mean(base[u]["heldout"]["accuracy"] for u in users),
            "heldout_after": mean(r["heldout_after"]["accuracy"] for r in recs),
            "compile_calls": mean(r["compile"]["usage"]["calls"] - r["compile"]["usage"]["cache_hits"] for r in recs),
            "compile_cache_hits": mean(r["compile"]["usage"]["cache_hits"] for r in recs),
            "compile_tokens": mean(r["compile"]["usage"]["total_tokens"] for r in recs),
            "compile_seconds": mean(r["compile"]["usage"]["seconds"] for r in recs),
            "persona_changed": sum(bool(r["persona_changed"]) for r in recs),
            "stopped_by_budget": sum(str(r["compile"]["stop_reason"]).startswith("budget") for r in recs),
        }
        rows[strategy] = row
        table.append(
            f"| {strategy} | {row['users']} | {row['batch_before']} | {row['batch_after']} | {row['heldout_before']} "
            f"| {row['heldout_after']} | {row['compile_calls']} (+{row['compile_cache_hits']} cached) "
            f"| {row['compile_tokens']} | {row['compile_seconds']} "
            f"| {row['persona_changed']} | {row['stopped_by_budget']} |"
        )
    md = "\n".join(
        [
            f"# Persona alignment on real users ({meta['task']}, LM `{meta['lm']}`)",
            "",
            f"Budget per compile: {meta['budget']} LM calls (the PersonaAligner's estimate). Held-out: the user's "
            f"next {meta['heldout']} queries. Accuracy is exact match; calls/tokens/seconds are per compile (means);"
            " calls are those charged to the budget, cached ones (answered by DSPy's response cache, free) beside them.",
            "",
            "| strategy | users | batch before | batch after | held-out before | held-out after | calls | tokens "
            "| seconds | persona changed | stopped by budget |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *table,
            "",
            f"Command: `{meta['command']}`",
        ]
    )
    return rows, md


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: PERSONA_AGENT_DATA_DIR)")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--lm", default="local")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--heldout", type=int, default=2)
    parser.add_argument("--max-iters", type=int, default=1)
    parser.add_argument(
        "--update",
        choices=["rewrite", "edit"],
        default="edit",
        help="PersonaAligner's update step; 'edit' for small models, which copy a persona back when asked to rewrite",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_align.json")
    parser.add_argument("--report-only", action="store_true", help="rebuild the JSON and Markdown from the JSONL")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".persona_agent" / "bench_align")
    return parser.parse_args()


def report_only(args: argparse.Namespace, done: dict[tuple[str, str], dict]) -> None:
    """Rebuild the JSON summary and the Markdown table from the JSONL, keeping the previous run's meta."""
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    meta = previous.get("meta") or {"task": "LaMP-2N (HuffPost authors)", "lm": args.lm, "heldout": args.heldout}
    rows, md = summarize(list(done.values()), meta)
    args.out.write_text(json.dumps({**previous, "summary": rows}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(md + "\n")
    print(md)


def run_meta(args: argparse.Namespace) -> dict[str, Any]:
    """The run's description for the summary; `budget` becomes each user's estimate as the run goes."""
    command = (
        f"python benchmarks/bench_align.py --users {args.users} --lm {args.lm} --strategies "
        f"{' '.join(args.strategies)} --n {args.n} --heldout {args.heldout} --max-iters {args.max_iters} "
        f"--update {args.update}"
    )
    return {
        "task": "LaMP-2N (HuffPost authors)",
        "lm": args.lm,
        "heldout": args.heldout,
        "command": command,
        "budget": None,
    }


def build_profile(store: MemoryStore, user: EvalUser) -> Profile:
    """The stored profile, or one summarised from the memory before the user's first query."""
    return store.get_profile(user.user_id) or ProfileBuilder(max_records=20).build(
        store, user.user_id, before=user.queries[0].timestamp
    )


def agent_for(store: MemoryStore, user: EvalUser, persona: Persona, max_iters: int) -> PersonaAgent:
    return PersonaAgent(
        CategorizeArticle, user_id=user.user_id, store=store, persona=persona, max_iters=max_iters, allow_updates=False
    )


@dataclass(frozen=True)
class Run:
    """What this run has recorded: the records by (user, strategy), the JSONL they go to, the summary's meta."""

    done: dict[tuple[str, str], dict]
    jsonl: Path
    meta: dict[str, Any]


@dataclass(frozen=True)
class UserSetup:
    """One user's inputs to every strategy's compile: the agent with its initial persona and the two sets."""

    user: EvalUser
    agent: PersonaAgent
    persona: Persona
    trainset: list[dspy.Example]
    heldout: list[dspy.Example]


def baseline(store: MemoryStore, user: EvalUser, history: int, sets: tuple[list, list], max_iters: int) -> dict:
    """The user's `initial` record: the summarised profile, its persona and the scores before any compile."""
    with track_usage() as usage:
        profile = build_profile(store, user)
    persona = init_persona(user.user_id, profile.text)
    agent = agent_for(store, user, persona, max_iters)
    return {
        "user": user.key,
        "user_id": user.user_id,
        "strategy": "initial",
        "history": history,
        "profile": profile.text,
        "profile_usage": usage.report().as_dict(),
        "persona": persona.text,
        "batch": evaluate(agent, sets[0]),
        "heldout": evaluate(agent, sets[1]),
    }


def align(strategy: str, setup: UserSetup, budget: int, args: argparse.Namespace) -> dict[str, Any]:
    """One strategy's compile at `budget` LM calls and the compiled agent's scores on the batch and held-out."""
    user, persona = setup.user, setup.persona
    compiled = optimizer_for(
        strategy,
        n=args.n,
        max_lm_calls=budget,
        metric=exact_match,
        update=args.update,
        constrain=False,
        breadth=2,
        depth=1,
        log_dir=args.workdir / f"gepa-{user.user_id}-{datetime.now():%Y%m%d%H%M%S}",
    ).compile(setup.agent, trainset=setup.trainset)
    trace = compiled.alignment_trace
    return {
        "user": user.key,
        "user_id": user.user_id,
        "strategy": strategy,
        "persona_before": persona.text,
        "persona_after": compiled.persona.text,
        "gradient": gradient_of(trace),
        "persona_changed": compiled.persona.text != persona.text,
        "update": args.update if strategy == "persona_aligner" else None,
        "compile": {"usage": trace["usage"], "stop_reason": trace["stop_reason"]},
        "batch_after": evaluate(compiled, setup.trainset),
        "heldout_after": evaluate(compiled, setup.heldout),
    }


def user_setup(store: MemoryStore, user: EvalUser, args: argparse.Namespace, run: Run) -> UserSetup:
    """Seed the user's memory, record the `initial` baseline once, and build the agent every strategy compiles."""
    first = user.queries[0]
    memory = user.profile_before(first)
    if store.count(user.user_id) == 0:
        store.add(user.user_id, [{"query": i.input, "response": i.output, "created_at": i.timestamp} for i in memory])
    trainset = [example(i) for i in user.first_alignment_batch(args.n)]
    heldout = [example(q) for q in user.queries[: args.heldout]]
    base = run.done.get((user.key, "initial"))
    if base is None:
        base = baseline(store, user, len(memory), (trainset, heldout), args.max_iters)
        append(run.jsonl, base)
        run.done[(user.key, "initial")] = base
    if "profile" not in base:  # the private sidecar is gone (a fresh checkout): summarise again
        base["profile"] = build_profile(store, user).text
    persona = init_persona(user.user_id, base["profile"])
    agent = agent_for(store, user, persona, args.max_iters)
    return UserSetup(user=user, agent=agent, persona=persona, trainset=trainset, heldout=heldout)


def run_user(setup: UserSetup, args: argparse.Namespace, run: Run, progress: str) -> None:
    """Compile and score every strategy not yet recorded for this user, appending each record as it finishes."""
    user, done = setup.user, run.done
    budget = PersonaAligner(n=args.n).estimate(setup.trainset, student=setup.agent).max_lm_calls
    run.meta["budget"] = budget
    for strategy in args.strategies:
        if (user.key, strategy) in done:
            continue
        rec = align(strategy, setup, budget, args)
        append(run.jsonl, rec)
        done[(user.key, strategy)] = rec
        print(
            f"{progress} {user.user_id} {strategy}: "
            f"held-out {done[(user.key, 'initial')]['heldout']['accuracy']} -> {rec['heldout_after']['accuracy']}",
            flush=True,
        )


def write_summary(out: Path, run: Run, started: float) -> str:
    """Rebuild the JSON summary and the Markdown table from every record so far; returns the Markdown."""
    rows, md = summarize(list(run.done.values()), run.meta)
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "meta": run.meta,
                "summary": rows,
                "wall_seconds_this_run": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
        + "\n"
    )
    out.with_suffix(".md").write_text(md + "\n")
    return md


def run_all(args: argparse.Namespace, jsonl: Path, done: dict) -> str:
    """Every user and strategy (resuming from the JSONL); the summary is rewritten after each user."""
    args.workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=args.workdir)
    lm = make_lm(args.lm, settings=settings)
    embedder = SentenceTransformerEmbedder()
    dataset = build_huffpost_categories(data_folder(args.data))
    users = sorted(dataset.users, key=lambda u: (-len(u.history), u.user_id))[: args.users]
    run = Run(done=done, jsonl=jsonl, meta=run_meta(args))
    started = time.perf_counter()
    with dspy.context(lm=lm, adapter=adapter_for(lm)):
        for number, user in enumerate(users, 1):
            with MemoryStore(args.workdir / f"{user.user_id}.duckdb", embedder=embedder, settings=settings) as store:
                run_user(user_setup(store, user, args, run), args, run, f"[{number}/{len(users)}]")
            md = write_summary(args.out, run, started)
    return md


def main() -> None:
    args = parse_args()
    jsonl = args.out.with_suffix(".jsonl")
    done = load_done(jsonl)
    if args.report_only:
        report_only(args, done)
        return
    print(run_all(args, jsonl, done))


if __name__ == "__main__":
    main()
