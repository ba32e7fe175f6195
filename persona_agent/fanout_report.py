"""`persona-agent compile --all`'s face of the fan-out (`persona_agent.fanout`): the runner chosen from the
settings, a Rich progress bar (users done / failed, elapsed, ETA) and the result table."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Table

from persona_agent.compiling import CompileOptions
from persona_agent.fanout import Budget, FanoutReport, Progress, compile_all
from persona_agent.runners import make_runner
from persona_agent.workspace import Workspace

__all__ = ["RichProgress", "compile_everyone", "report_table"]


class RichProgress(Progress):
    """Users done / failed, elapsed and ETA, as a Rich bar (a context manager)."""

    def __init__(self, console: Console | None = None) -> None:
        self.failed = 0
        self.bar = RichBar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("Compiling", total=None, failed=0)

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def start(self, total: int) -> None:
        self.bar.update(self.task, total=total)

    def done(self, user_id: str, ok: bool) -> None:
        self.failed += not ok
        self.bar.update(self.task, advance=1, failed=self.failed, description=f"Compiling (last: {user_id})")


def compile_everyone(
    workspace: Workspace,
    options: CompileOptions,
    *,
    runner: str | None = None,
    workers: int | None = None,
    min_new: int | None = None,
    retries: int | None = None,
    budget: Budget | None = None,
    console: Console | None = None,
) -> FanoutReport:
    """`persona-agent compile --all`: every selected user on the chosen runner (defaults: the settings), with
    a Rich progress bar."""
    settings = workspace.settings
    chosen = make_runner(
        runner or settings.compile_runner,
        workers or settings.compile_fanout_workers,
        address=settings.ray_address,
        cpus_per_job=settings.ray_cpus_per_job,
    )
    try:
        with RichProgress(console) as progress:
            return compile_all(
                workspace,
                options,
                chosen,
                min_new=min_new or settings.compile_min_new_interactions,
                retries=settings.compile_retries if retries is None else retries,
                budget=budget,
                progress=progress,
            )
    finally:
        chosen.close()


def report_table(report: FanoutReport) -> Table:
    """One row per user: the version made, LM calls, tokens, attempts; or why it failed or was skipped."""
    table = Table(title=f"Compiled {len(report.compiled)}, failed {len(report.failed)}", title_justify="left")
    for column in ("user", "result", "LM calls", "tokens", "attempts"):
        table.add_column(column)
    for r in report.compiled:
        made = f"v{r.version} (from v{r.parent})" + (" live" if r.promoted else "") if r.changed else "unchanged"
        calls, tokens = str(r.usage.get("calls", "")), str(r.usage.get("total_tokens", ""))
        table.add_row(r.user_id, made, calls, tokens, str(report.attempts.get(r.user_id, 1)))
    for user, error in report.failed.items():
        table.add_row(user, f"[red]failed[/red]: {error}", "", "", str(report.attempts.get(user, "")))
    for user, reason in report.skipped.items():
        table.add_row(user, f"[yellow]skipped[/yellow]: {reason}", "", "", "")
    table.caption = f"{report.lm_calls} LM calls, {report.tokens} tokens, {report.seconds:.1f} s"
    return table
