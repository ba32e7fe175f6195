"""`compile` (re-compile personas, with the estimate printed first) and `ask` (answer one request)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from persona_agent.cli.common import LMOption, UserOption, app, console, err, exit_codes, progress, users_of, workspace
from persona_agent.core.errors import PersonaAgentError

if TYPE_CHECKING:
    from persona_agent.compiling import CompileOptions, CompilePlan, CompileResult
    from persona_agent.workspace import Workspace

ESTIMATE_COLUMNS = ("max_lm_calls", "simulate", "loss", "gradient", "update", "evaluate")


@app.command("compile")
@exit_codes
def compile_command(
    user: Annotated[str | None, typer.Option("--user", "-u", help="The user id.")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user in the store.")] = False,
    n: Annotated[int, typer.Option(help="Latest interactions in the alignment batch.")] = 3,
    iterations: Annotated[int, typer.Option(help="Alignment rounds (COPRO: depth).")] = 1,
    strategy: Annotated[str, typer.Option(help="persona_aligner, gepa or copro.")] = "persona_aligner",
    accept: Annotated[str, typer.Option(help="always (the paper) or improve.")] = "always",
    update: Annotated[str, typer.Option(help="rewrite (the paper) or edit (suits small local models).")] = "rewrite",
    max_lm_calls: Annotated[int | None, typer.Option(help="Budget: most LM calls per user.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Budget: most tokens per user.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Budget: most seconds per user.")] = None,
    constrain: Annotated[
        bool, typer.Option(help="GEPA/COPRO: hold each proposal to PersonaAligner's checks (off: as published).")
    ] = True,
    promote: Annotated[bool, typer.Option(help="Make a changed persona live.")] = True,
    promote_flagged: Annotated[
        bool, typer.Option(help="Also make live a GEPA/COPRO persona that fails PersonaAligner's checks.")
    ] = False,
    register: Annotated[
        bool | None, typer.Option(help="Register in MLflow's model registry (default: the setting).")
    ] = None,
    lm: LMOption = None,
    runner: Annotated[str | None, typer.Option(help="--all: local or ray (default: the setting).")] = None,
    workers: Annotated[int | None, typer.Option(help="--all: users compiled at once (default: the setting).")] = None,
    min_new: Annotated[
        int | None, typer.Option(help="--all: only users with this many new interactions (default: the setting).")
    ] = None,
    retries: Annotated[int | None, typer.Option(help="--all: retries of a failed user (default: the setting).")] = None,
    total_lm_calls: Annotated[int | None, typer.Option(help="--all budget: LM calls in total.")] = None,
    total_tokens: Annotated[int | None, typer.Option(help="--all budget: tokens in total.")] = None,
    total_seconds: Annotated[float | None, typer.Option(help="--all budget: seconds in total.")] = None,
) -> None:
    """Re-compile personas from users' latest interactions, the estimate first. With --all, users with new
    interactions are compiled concurrently (persona_agent.fanout, docs/scale.md), the driver writing."""
    from persona_agent.compiling import CompileOptions

    options = CompileOptions.parse(
        n=n,
        iterations=iterations,
        strategy=strategy,
        accept=accept,
        update=update,
        max_lm_calls=max_lm_calls,
        max_tokens=max_tokens,
        max_seconds=max_seconds,
        constrain=constrain,
        promote=promote,
        promote_flagged=promote_flagged,
        register_model=register,
    )
    if all_users and user is None:
        fanout = {"runner": runner, "workers": workers, "min_new": min_new, "retries": retries}
        _compile_all(options, lm, fanout, (total_lm_calls, total_tokens, total_seconds))
        return
    with workspace(lm=lm, needs_lm=True) as ws:
        plans = _plans(ws, users_of(ws, user, all_users), options, all_users=all_users)
        failures = _run_plans(ws, plans)
        typer.echo(f"See the runs: mlflow ui --backend-store-uri {ws.settings.resolved_tracking_uri}")
    if failures:
        raise typer.Exit(1)


def _compile_all(
    options: CompileOptions, lm: str | None, fanout: dict[str, Any], totals: tuple[int | None, int | None, float | None]
) -> None:
    """`compile --all`: the fan-out over the users with new interactions, under one total budget."""
    from persona_agent.fanout import Budget
    from persona_agent.fanout_report import compile_everyone, report_table

    budget = Budget(max_lm_calls=totals[0], max_tokens=totals[1], max_seconds=totals[2])
    with workspace(lm=lm, needs_lm=True) as ws:
        report = compile_everyone(ws, options, budget=budget, **fanout)
        console.print(report_table(report))
    if report.failed:
        raise typer.Exit(1)


def _plans(ws: Workspace, users: list[str], options: CompileOptions, *, all_users: bool) -> list[CompilePlan]:
    """Plan each user's compile and print the estimates; with `--all`, a user who cannot be planned is skipped
    (and said so), else the error stands."""
    from persona_agent.compiling import plan_compile

    plans, skipped = [], []
    for name in users:
        try:
            plans.append(plan_compile(ws, name, options))
        except (ValueError, LookupError) as exc:
            if not all_users:
                raise
            skipped.append((name, str(exc)))
    capped = any(plan.estimate.get("capped") for plan in plans)
    caption = "* batch shrunk to fit --max-lm-calls" if capped else None
    table = Table(title="Estimate (most LM calls per user)", title_justify="left", caption=caption)
    for column in ("user", "batch", "max LM calls", "simulate", "loss", "gradient", "update", "evaluate"):
        table.add_column(column, justify="left" if column == "user" else "right")
    for plan in plans:
        e = plan.estimate
        batch = f"{e.get('batch') or len(plan.trainset)}{'*' * bool(e.get('capped'))}"
        table.add_row(plan.user_id, batch, *(str(e.get(k, "-")) for k in ESTIMATE_COLUMNS))
    console.print(table)
    for name, reason in skipped:
        console.print(f"[yellow]skipped[/yellow] {name}: {reason}")
    return plans


def _run_plans(ws: Workspace, plans: list[CompilePlan]) -> int:
    """Run the planned compiles, print what each did; returns how many failed."""
    from persona_agent.compiling import run_compile

    failures = 0
    results = Table(title="Compiled", title_justify="left")
    for column in ("user", "version", "changed", "live", "LM calls", "tokens", "stop"):
        results.add_column(column)
    runs: list[str] = []
    with progress() as bars:
        bar = bars.add_task("Compiling", total=len(plans))
        for plan in plans:
            bars.update(bar, description=f"Compiling {plan.user_id}")
            try:
                r = run_compile(ws, plan)
            except PersonaAgentError as exc:
                failures += 1
                err.print(f"[red]failed[/red] {plan.user_id}: {exc}", highlight=False)
            else:
                results.add_row(*_result_row(r))
                runs.append(f"{r.user_id}: MLflow run {r.mlflow_run_id}")
                _warn_about(r)
            bars.advance(bar)
    console.print(results)
    for line in runs:
        typer.echo(line)
    return failures


def _result_row(r: CompileResult) -> tuple[str, ...]:
    return (
        r.user_id,
        f"v{r.version} (from v{r.parent})" if r.changed else f"v{r.version}",
        "yes" if r.changed else "no",
        "yes" if r.promoted else "no",
        str(r.usage.get("calls", "")),
        str(r.usage.get("total_tokens", "")),
        r.stop_reason,
    )


def _warn_about(r: CompileResult) -> None:
    """A flagged persona (the guard's check failed), and an MLflow failure, are said on stderr."""
    if r.changed and r.persona_check != "ok":
        held = "made live anyway" if r.promoted else "not made live"
        err.print(
            f"[yellow]persona_check[/yellow] {r.user_id} v{r.version}: {r.persona_check}; {held}. "
            f"Review: persona-agent personas show --user {r.user_id} --version {r.version}",
            highlight=False,
        )
    if r.tracking_error:
        err.print(f"[yellow]MLflow[/yellow] {r.user_id}: {r.tracking_error}", highlight=False)


@app.command()
@exit_codes
def ask(
    request: Annotated[str, typer.Argument(help="What the user asks.")],
    user: UserOption,
    version: Annotated[str | None, typer.Option(help="A version, alias, run id, models:/ or prompts:/ URI.")] = None,
    lm: LMOption = None,
) -> None:
    """Answer one request with the user's live persona (or `--version`)."""
    with workspace(lm=lm, needs_lm=True) as ws, err.status(f"Answering for {user}..."):
        ws.require_user(user)
        if version is not None and not version.isdigit() and version not in ("live", "champion", "latest"):
            agent = ws.load_program(user, version)
            with ws.lm_context():
                prediction = agent(**ws.inputs_for(agent, request))
            text = str(prediction[next(iter(agent.task_signature.output_fields))])
            label = version
        else:
            answer = ws.respond(user, request, version=version)
            text, label = answer.text, f"v{answer.persona_version}"
    typer.echo(text)
    err.print(f"({user}@{label})", highlight=False)
