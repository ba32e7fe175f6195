"""`persona-agent eval`: run (or resume) an evaluation, rebuild its report and the index of every run.

A Typer sub-app, mounted by the main CLI with `app.add_typer(eval_app, name="eval")`; also runnable as
`python -m persona_agent.evaluation.cli`. Heavy modules (DSPy, the runner) load inside the commands so
`--help` stays instant.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from persona_agent.core.errors import PersonaAgentError

eval_app = typer.Typer(
    help="Evaluate PersonaAgent, the baselines, ablations and no-LM floors on per-user LaMP tasks built from real data.",
    no_args_is_help=True,
)
console = Console()

RESULTS_ROOT = Path("benchmarks/results/eval")  # as run_config.DEFAULT_OUT, which loads DSPy: not for `--help`

# `eval run` options whose help does not fit on the parameter's line.
_Methods = Annotated[
    str,
    typer.Option(
        help="Comma-separated methods, groups (floors, baselines, ablations, strategies, planned_mode) or all."
    ),
]
_Data = Annotated[Path | None, typer.Option(help="The real-data folder (default: the PERSONA_AGENT_DATA_DIR setting).")]
_RunName = Annotated[str | None, typer.Option(help="Run folder name (default: <lm>-<users>u-<queries>q-seed<seed>).")]
_Workers = Annotated[
    int | None, typer.Option(min=1, help="Users in parallel (default 1 for the in-process model, else 4).")
]
_AlignThreads = Annotated[
    int | None, typer.Option(min=1, help="Parallel simulations within one alignment (default 1 in-process, else 4).")
]


@eval_app.callback()
def _offline() -> None:
    """Never reach a model hub or LiteLLM's remote cost map (the main CLI does the same)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def _fail(exc: PersonaAgentError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2 if isinstance(exc, ValueError) else 1)


def _print_summary(results: dict) -> None:
    metrics = results["metrics"]
    table = Table(title=f"{results['task']} · {results['run']}", title_justify="left")
    table.add_column("method", no_wrap=True)
    for metric in metrics:
        table.add_column(metric, justify="right")
    for column in ("queries", "errors", "calls/sample", "s/sample"):
        table.add_column(column, justify="right")
    for s in results["summary"]:
        cells = [f"{s['metrics'][m]['estimate']:.3f}" for m in metrics]
        cost = s["per_sample"]
        table.add_row(
            s["method"], *cells, str(s["n_queries"]), str(s["errors"]), f"{cost['calls']:.1f}", f"{cost['seconds']:.1f}"
        )
    console.print(table)


@eval_app.command("run")
def run_command(
    task: Annotated[str, typer.Option(help="lamp2n (HuffPost), lamp2m (MovieLens), lamp3 (Amazon) or lamp4.")],
    users: Annotated[int, typer.Option(min=1, help="Users to sample (all eligible ones if fewer).")] = 20,
    queries: Annotated[int, typer.Option(min=1, help="Latest items per user used as queries.")] = 3,
    methods: _Methods = "all",
    lm: Annotated[str, typer.Option(help="'local', 'gguf:/path.gguf' or a LiteLLM model string.")] = "local",
    seed: Annotated[int, typer.Option(min=0, help="Seed of the user sample, GEPA and the bootstrap.")] = 0,
    out: Annotated[Path, typer.Option(help="Results root; the run goes to <out>/<task>/<run-name>.")] = RESULTS_ROOT,
    data: _Data = None,
    run_name: _RunName = None,
    k: Annotated[int, typer.Option(min=1, help="Retrieved memory items per query.")] = 4,
    max_iters: Annotated[int, typer.Option(min=1, help="Most tool calls per agent answer.")] = 3,
    align_n: Annotated[int, typer.Option(min=1, help="Alignment batch: items just before the first query.")] = 3,
    align_iterations: Annotated[int, typer.Option(min=1, help="PersonaAligner iterations.")] = 1,
    align_budget: Annotated[int, typer.Option(min=4, help="LM calls per user and alignment strategy, at most.")] = 60,
    profile_records: Annotated[int, typer.Option(min=1, help="Latest memory items summarised into the profile.")] = 40,
    workers: _Workers = None,
    align_threads: _AlignThreads = None,
    lm_cache: Annotated[bool, typer.Option(help="Use DSPy's response cache (off: honest seconds).")] = False,
    retry_errors: Annotated[bool, typer.Option(help="On resume, rerun examples that failed.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Run every method on the sampled users; rerun the same command to resume an interrupted run."""
    from persona_agent.evaluation.runner import RunConfig, run_evaluation

    try:
        config = RunConfig(
            task=task,
            users=users,
            queries=queries,
            methods=methods,
            lm=lm,
            seed=seed,
            out=out,
            data=data,
            run_name=run_name,
            k=k,
            max_iters=max_iters,
            align_n=align_n,
            align_iterations=align_iterations,
            align_budget=align_budget,
            profile_records=profile_records,
            workers=workers,
            align_threads=align_threads,
            lm_cache=lm_cache,
        )
        console.print(f"[bold]{config.task}[/bold] → {config.run_dir}")
        result = run_evaluation(config, retry_errors=retry_errors, progress=progress, console=console)
    except PersonaAgentError as exc:
        raise _fail(exc) from None
    _print_summary(json.loads(result.results.read_text(encoding="utf-8")))
    console.print(
        f"{result.rows_written} examples run ({result.errors} failed), {result.rows_skipped} already done.\n"
        f"Wrote {result.results}, {result.markdown}, {result.chart}"
    )


@eval_app.command("report")
def report_command(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (holding predictions.jsonl).")],
    index: Annotated[
        bool, typer.Option(help="Also regenerate the index page of the runs root (<run_dir>/../..) beside that root.")
    ] = True,
) -> None:
    """Rebuild results.json, results.md and results.png of a run folder from its predictions.jsonl, then the
    index of every run beside it (`eval index`)."""
    from persona_agent.evaluation.report import write_report
    from persona_agent.evaluation.results_index import write_index

    try:
        files = write_report(run_dir)
    except PersonaAgentError as exc:
        raise _fail(exc) from None
    pages: list[Path] = []
    try:
        pages = write_index(Path(run_dir).parent.parent) if index else []
    except PersonaAgentError as exc:
        console.print(f"[yellow]index not written:[/yellow] {exc}")
    _print_summary(json.loads(files.results.read_text(encoding="utf-8")))
    console.print(f"Wrote {', '.join(str(f) for f in [files.results, files.markdown, files.chart, *pages])}")


@eval_app.command("index")
def index_command(
    root: Annotated[Path, typer.Argument(help="The runs root, holding <task>/<run>/results.json.")] = RESULTS_ROOT,
    page: Annotated[Path | None, typer.Option(help="The index page (default: README.md beside the root).")] = None,
    readme: Annotated[
        Path | None, typer.Option(help="Also splice the headline table into this file, between its results markers.")
    ] = None,
) -> None:
    """Regenerate the evaluation index page (one headline table linking every run's results.md) from the runs'
    results.json, without rescoring them; e.g. `persona-agent eval index --readme README.md`."""
    from persona_agent.evaluation.results_index import write_index

    try:
        pages = write_index(root, page, readme)
    except PersonaAgentError as exc:
        raise _fail(exc) from None
    console.print(f"Wrote {', '.join(str(p) for p in pages)}")


if __name__ == "__main__":
    eval_app()
