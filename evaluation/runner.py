"""The evaluation runner: every method on every sampled user's latest queries, resumable, with its costs.

`run_evaluation(config)` samples the users, skips what the results log already holds, runs the rest user by
user (`user_run.UserRun`: memory, profile, alignment, answers; users in parallel threads that carry the DSPy
context when the LM is not the in-process one, which serializes calls anyway), then rebuilds the report.

Resume: rows are appended to `predictions.jsonl` as they finish, and the profile and personas are cached
per user under `state/`, so a rerun of the same command skips finished rows and reuses the expensive
per-user work; the final results file is rebuilt from the log, so it is the same whether or not the run
was interrupted (up to wall-clock seconds).

Errors: an example that fails (unparseable output, a provider error) is a row with its error, scored as
LaMP scores a missing answer; `retry_errors` reruns those rows. Systemic failures (no LM runtime, a
broken store, a scripted LM without an answer) stop the run, as do `max_consecutive_errors` failed rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, nullcontext
from contextvars import copy_context
from dataclasses import dataclass
from pathlib import Path

import dspy
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError
from persona_agent.core.records import EvalDataset, EvalUser, Item
from persona_agent.evaluation.builders import data_path
from persona_agent.evaluation.errors import EvalRunMismatchError
from persona_agent.evaluation.persist import ResultLog, Row, StateCache, latest_rows
from persona_agent.evaluation.plan import FORMAT, METHODS_BY_NAME, MethodSpec
from persona_agent.evaluation.run_config import RunConfig, sample_users
from persona_agent.evaluation.run_state import RunState, item_time, memory_items
from persona_agent.evaluation.user_run import UserRun
from persona_agent.evaluation.user_setup import alignment_examples
from persona_agent.lm.models import adapter_for, is_local, make_lm
from persona_agent.stores.embeddings import Embedder, SentenceTransformerEmbedder
from persona_agent.stores.knowledge import KnowledgeBase

__all__ = [
    "RunConfig",
    "RunResult",
    "alignment_examples",
    "item_time",
    "memory_items",
    "quiet_optimizer_logs",
    "run_evaluation",
    "sample_users",
]

LOG_NAME = "predictions.jsonl"
STATE_DIR = "state"

# Loggers that report each example an optimizer's inner `Evaluate` scored 0 once the alignment budget is spent
# (expected, and recorded in the alignment trace), and its per-candidate chatter: quiet during a run.
_CHATTY_LOGGERS = {"dspy.utils.parallelizer": logging.CRITICAL, "dspy.evaluate.evaluate": logging.WARNING}
_CHATTY_LOGGERS["dspy.teleprompt.copro_optimizer"] = logging.WARNING


def _columns() -> tuple[ProgressColumn, ...]:
    """The progress bar's columns, made anew for each bar (columns keep per-task render caches)."""
    return (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )


Work = list[tuple[EvalUser, list[tuple[MethodSpec, Item]]]]  # per user, the (method, query) rows to run


@contextmanager
def quiet_optimizer_logs() -> Iterator[None]:
    """Raise the level of `_CHATTY_LOGGERS` for the scope, restoring it after."""
    saved = {name: logging.getLogger(name).level for name in _CHATTY_LOGGERS}
    for name, level in _CHATTY_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@dataclass(frozen=True)
class RunResult:
    """Where a run's files are and what this invocation did."""

    run_dir: Path
    log: Path
    results: Path
    markdown: Path
    chart: Path
    rows_written: int
    rows_skipped: int
    errors: int


def _meta(config: RunConfig, dataset: EvalDataset, users: Sequence[EvalUser], methods: Sequence[str]) -> Row:
    return {
        "kind": "meta",
        "format": FORMAT,
        "identity": config.identity(),
        "users": [u.key for u in users],
        "queries": {u.key: [q.id for q in u.queries] for u in users},
        "methods": list(methods),
        "command": config.command(methods),
        "run_dir": str(config.run_dir),
        "config": config.as_dict(),
        "dataset": dataset.report.model_dump(mode="json"),
        "eligible_users": len(dataset.users),
    }


def _check_resume(previous: Row | None, meta: Row) -> None:
    if previous is None:
        return
    for key in ("identity", "users", "queries"):
        if previous.get(key) != meta[key]:
            raise EvalRunMismatchError(
                f"the run folder holds results of another configuration ({key} differs: "
                f"{str(previous.get(key))[:120]} vs {str(meta[key])[:120]}); pass another --run-name or --out"
            )


def run_evaluation(
    config: RunConfig,
    *,
    dataset: EvalDataset | None = None,
    lm: dspy.BaseLM | None = None,
    embedder: Embedder | None = None,
    knowledge: KnowledgeBase | None = None,
    retry_errors: bool = False,
    progress: bool = True,
    console: Console | None = None,
    after_row: Callable[[Row], None] | None = None,
    max_consecutive_errors: int = 25,
) -> RunResult:
    """Run (or resume) `config` and write its report. Anything not given is built from the config:
    the dataset from `config.data`, the LM from `config.lm`, the default embedder, the movie knowledge
    base (LaMP-2M). `after_row(row)` is called after each row is persisted (progress hooks, tests)."""
    from persona_agent.evaluation.report import write_report

    setup = config.setup
    dataset, users = _sampled(config, dataset)
    log, done = _open_log(config, dataset, users)
    work, skipped = _pending_work(config, users, done, retry_errors)
    console = console or Console(stderr=True)
    todo_specs = {spec.name: spec for _, items in work for spec, _ in items}.values()
    lm, embedder, knowledge = _resources(config, todo_specs, lm, embedder, knowledge, console)
    local = lm is not None and is_local(lm)
    workers = config.workers or (1 if lm is None or local else 4)

    with Progress(*_columns(), console=console, disable=not progress) as bar_view:
        run = RunState(
            config=config,
            setup=setup,
            log=log,
            state=StateCache(config.run_dir / STATE_DIR),
            done=done,
            embedder=embedder,
            knowledge=knowledge,
            align_threads=config.align_threads or (1 if local or lm is None else 4),
            progress=bar_view,
            bar=bar_view.add_task(setup.task.name, total=sum(len(items) for _, items in work)),
            after_row=after_row,
            max_consecutive_errors=max_consecutive_errors,
            users_total=len(work),
        )
        lm_scope = dspy.context(lm=lm, adapter=adapter_for(lm)) if lm is not None else nullcontext()
        with lm_scope, quiet_optimizer_logs():
            _run_users(run, work, workers)
    files = write_report(config.run_dir)
    return RunResult(
        run_dir=config.run_dir,
        log=log.path,
        results=files.results,
        markdown=files.markdown,
        chart=files.chart,
        rows_written=run.written,
        rows_skipped=skipped,
        errors=run.errors,
    )


def _sampled(config: RunConfig, dataset: EvalDataset | None) -> tuple[EvalDataset, list[EvalUser]]:
    """The dataset (built from `config.data` unless given) and the users sampled from it, checked first."""
    setup = config.setup
    dataset = (
        dataset
        if dataset is not None
        else setup.build(config.data, queries_per_user=config.queries, min_profile=config.align_n)
    )
    if dataset.task != setup.task.name:
        raise InvalidInputError("dataset", dataset.task, f"is not a {setup.task.name} dataset")
    users = sample_users(dataset, config.users, config.seed)
    if not users:
        raise InvalidInputError("dataset", dataset.report.summary(), "has no eligible users")
    return dataset, users


def _open_log(config: RunConfig, dataset: EvalDataset, users: Sequence[EvalUser]) -> tuple[ResultLog, dict]:
    """The results log and its latest rows; a meta row is appended when the methods or the config changed,
    after checking a resumed log was made for the same identity, users and queries."""
    log = ResultLog(config.run_dir / LOG_NAME)
    existing = log.load()
    metas = [r for r in existing if r.get("kind") == "meta"]
    done = latest_rows(r for r in existing if r.get("kind") != "meta")
    earlier_methods = metas[-1]["methods"] if metas else []
    methods = [m for m in METHODS_BY_NAME if m in set(earlier_methods) | set(config.methods)]
    meta = _meta(config, dataset, users, methods)
    _check_resume(metas[0] if metas else None, meta)
    if not metas or metas[-1]["methods"] != methods or metas[-1]["config"] != meta["config"]:
        log.append(meta)
    return log, done


def _pending_work(
    config: RunConfig, users: Sequence[EvalUser], done: dict[tuple[str, ...], Row], retry_errors: bool
) -> tuple[Work, int]:
    """The rows still to run per user (users with none left out), and how many planned rows the log holds."""

    def pending(spec: MethodSpec, user: EvalUser, query: Item) -> bool:
        row = done.get(("prediction", spec.name, user.key, query.id))
        return row is None or (retry_errors and row.get("error") is not None)

    specs = [METHODS_BY_NAME[m] for m in config.methods]
    planned = [(user, [(spec, q) for spec in specs for q in user.queries[: config.queries]]) for user in users]
    work = [(user, [(s, q) for s, q in items if pending(s, user, q)]) for user, items in planned]
    work = [(user, items) for user, items in work if items]
    skipped = sum(len(items) for _, items in planned) - sum(len(items) for _, items in work)
    return work, skipped


def _resources(
    config: RunConfig,
    specs: Iterable[MethodSpec],
    lm: dspy.BaseLM | None,
    embedder: Embedder | None,
    knowledge: KnowledgeBase | None,
    console: Console,
) -> tuple[dspy.BaseLM | None, Embedder | None, KnowledgeBase | None]:
    """What the methods still to run need and the caller did not give: the LM, the embedder, the movie
    knowledge base; nothing is built for a run with only floors left (or nothing at all)."""
    specs = list(specs)
    if any(not s.is_floor for s in specs) and lm is None:
        lm = make_lm(config.lm, cache=config.lm_cache)
    if any(s.needs_memory for s in specs) and embedder is None:
        embedder = SentenceTransformerEmbedder(Settings().embedder)
    if config.setup.knowledge and knowledge is None and any(s.uses_tools or s.persona == "aligned" for s in specs):
        from persona_agent.evaluation.moviekb import movie_knowledge_base

        cache_dir = config.cache_dir or Settings().resolved_cache_dir / "eval"
        with console.status("Building the movie knowledge base (once; cached)..."):
            knowledge = movie_knowledge_base(data_path(config.data), cache_dir, embedder)
    return lm, embedder, knowledge


def _run_users(run: RunState, work: Work, workers: int) -> None:
    """Each user's `UserRun`, in turn or in `workers` threads that carry the caller's context (the DSPy LM);
    on the first failure the others stop at their next example and queued users never start."""
    if workers == 1 or len(work) <= 1:
        for user, items in work:
            UserRun(run, user, items)()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="eval-user") as pool:
        futures = [pool.submit(copy_context().run, UserRun(run, u, items)) for u, items in work]
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            run.stop.set()  # running users stop at their next example; queued ones never start
            for future in futures:
                future.cancel()
            raise
