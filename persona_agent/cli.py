"""The `persona-agent` command line, for scripts: every command exits 0 when it did its work, 2 on bad input
(with a message naming what is wrong, and nothing written), 1 on any other failure.

Settings come from the environment (`PERSONA_AGENT_*`, see `persona_agent/core/config.py`); `--lm` overrides the
LM for one command.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from persona_agent.core.config import Settings
from persona_agent.core.errors import PersonaAgentError
from persona_agent.evaluation.cli import eval_app

app = typer.Typer(help="PersonaAgent: personalized LLM agents as DSPy-compiled prompt programs.", no_args_is_help=True)
profile_app = typer.Typer(help="Semantic memory: build user profiles.", no_args_is_help=True)
personas_app = typer.Typer(help="Persona versions: list, show, diff, promote, roll back.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
app.add_typer(personas_app, name="personas")
app.add_typer(eval_app, name="eval")
console = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

LMOption = Annotated[str | None, typer.Option("--lm", help="LM spec for this command (default: PERSONA_AGENT_LM).")]
UserOption = Annotated[str, typer.Option("--user", "-u", help="The user id.")]


def _offline_env() -> None:
    """Never reach a model hub or LiteLLM's remote cost map: everything here runs offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@app.callback()
def main() -> None:
    _offline_env()


def exit_codes(fn: F) -> F:
    """Map errors to exit codes: bad input (invalid values, unknown user or version, missing file) 2, else 1.

    The package's own errors print their message; any other error (a bug to fix: input should meet a typed
    error first) prints its type too, so an untyped failure is told apart."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            bad_input = isinstance(exc, ValueError | LookupError | FileNotFoundError)
            shown = str(exc) if isinstance(exc, PersonaAgentError) else f"{type(exc).__name__}: {exc}"
            err.print(f"[red]error:[/red] {shown}", highlight=False)
            raise typer.Exit(2 if bad_input else 1) from None

    return wrapper  # type: ignore[return-value]


def _settings(lm: str | None = None) -> Settings:
    return Settings(lm=lm) if lm else Settings()


def open_workspace(settings: Settings, *, needs_lm: bool):
    """The workspace of one command, with the settings' LM if the command needs one. (Tests replace this to
    give commands a scripted LM and an already loaded embedder.)"""
    from persona_agent.lm.models import make_lm
    from persona_agent.workspace import Workspace

    return Workspace(settings, lm=make_lm(settings=settings) if needs_lm else None)


def _workspace(*, lm: str | None = None, needs_lm: bool = False):
    return open_workspace(_settings(lm), needs_lm=needs_lm)


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


# -- demo ---------------------------------------------------------------------------------------------


@app.command()
def demo(
    data: Annotated[
        Path | None, typer.Option(help="Run the real-data demo on this folder's HuffPost articles instead.")
    ] = None,
    articles: Annotated[int, typer.Option(min=1, help="--data: HuffPost articles to ingest.")] = 1000,
    authors: Annotated[int, typer.Option(min=1, help="--data: authors to search for.")] = 3,
    agent: Annotated[bool, typer.Option(help="--data: also run the persona agent with the LM.")] = True,
    lm: Annotated[str | None, typer.Option(help="LM spec (default: the setting, 'local').")] = None,
) -> None:
    """The whole loop on the shipped sample, in <home>/demo (remade each run): ingest, profile, persona, answer,
    compile, diff, answer again, MLflow, load and serve. With --data: the real-data demo (HuffPost authors)."""
    if data is None:
        from persona_agent.demo import run_sample_demo

        try:
            report = run_sample_demo(_settings().home / "demo", lm=lm, console=console)
        except PersonaAgentError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(2 if isinstance(exc, ValueError) else 1) from None
        console.print(f"Done in {report.seconds:.0f} s (by step: {report.step_seconds}); LM calls: {report.lm_calls}.")
        return
    from persona_agent.demo_huffpost import run_demo

    try:
        model = None
        if agent:
            from persona_agent.lm.models import make_lm

            model = make_lm(lm)
        status = "Ingesting, searching, then the agent answers with the LM (a few minutes offline)..."
        with console.status(status if agent else "Ingesting and searching..."):
            result = run_demo(data, articles=articles, authors=authors, lm=model)
    except PersonaAgentError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2 if isinstance(exc, ValueError) else 1) from None
    console.print(
        f"Ingested {result.articles} articles by {result.users} authors in {result.ingest_seconds:.1f} s "
        f"({result.articles / result.ingest_seconds:.0f} articles/s)."
    )
    for user, query, hits in result.searches:
        table = Table(title=f"{user}: memory closest to their latest article", title_justify="left")
        table.add_column("score", justify="right")
        table.add_column("category")
        table.add_column("earlier article")
        for hit in hits:
            table.add_row(f"{hit.score:.3f}", hit.interaction.response, hit.interaction.query[:90])
        console.print(f"\n[bold]Latest[/bold]: {query[:110]}")
        console.print(table)
    if result.answer is not None:
        a = result.answer
        console.print(f"\n[bold]{a.user_id}'s persona[/bold] (from a profile the LM summarised from memory):")
        console.print(a.persona)
        for i, step in enumerate(a.trajectory):
            console.print(f"[bold]tool {i}[/bold] {step['tool']}({step['args']}) -> {str(step['observation'])[:300]}")
        console.print(f"[bold]Agent[/bold]: {a.response}   [dim](the author's own label: {a.gold})[/dim]")
        console.print(f"{a.lm_calls} LM calls, {a.tokens} tokens, {a.seconds:.0f} s")


# -- memory -------------------------------------------------------------------------------------------


@app.command()
@exit_codes
def ingest(
    path: Annotated[Path, typer.Argument(help="A JSONL, CSV, LaMP questions or OPPU users file.")],
    user: Annotated[str | None, typer.Option("--user", "-u", help="Store every record for this user.")] = None,
    user_column: Annotated[str, typer.Option(help="The column naming each record's user.")] = "user_id",
    fmt: Annotated[str | None, typer.Option("--format", help="jsonl, csv, lamp or oppu (default: by suffix).")] = None,
    task: Annotated[str | None, typer.Option(help="LaMP/OPPU task, e.g. LaMP-2N.")] = None,
    outputs: Annotated[Path | None, typer.Option(help="LaMP/OPPU golds file, if separate.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Records per embedding call (for progress).")] = 256,
) -> None:
    """Add interactions to users' episodic memory. The whole file is validated before anything is written, then
    written in one transaction (a crash leaves all of it or none); records already stored are skipped, so running
    the same file again adds nothing."""
    from persona_agent.core.errors import InvalidInputError
    from persona_agent.ingest import read_records

    settings = _settings()
    records = read_records(
        path, fmt=fmt, user=user, user_column=user_column, task=task, outputs=outputs, max_chars=settings.max_text_chars
    )
    if not records:
        raise InvalidInputError("path", str(path), "holds no records")
    with _workspace() as workspace, _progress() as progress:
        progress.console.print(f"Read {len(records)} records from {path.name}; writing them in one transaction.")
        bar = progress.add_task(f"Ingesting {path.name}", total=len(records))
        report = workspace.store.ingest(records, batch_size=batch, progress=lambda n: progress.advance(bar, n))
    users = len({u for u, _ in records})
    typer.echo(
        f"Stored {report.added} interactions for {users} user{'s' * (users != 1)}; "
        f"skipped {report.skipped} duplicate{'s' * (report.skipped != 1)} (already stored, or repeated in the file)."
    )


@profile_app.command("build")
@exit_codes
def profile_build(
    user: Annotated[str | None, typer.Option("--user", "-u", help="The user id.")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Every user in the store.")] = False,
    lm: LMOption = None,
) -> None:
    """Summarise users' episodic memory into their semantic profile (a new profile version each).

    A user whose summary the LM keeps handing back as its own prompt is reported and keeps their previous
    profile; the others are still built, and the command exits 1."""
    from persona_agent.core.errors import ProfileEchoError
    from persona_agent.programs.profile import ProfileBuilder

    failures = 0
    with _workspace(lm=lm, needs_lm=True) as workspace:
        users = _users(workspace, user, all_users)
        builder = ProfileBuilder()
        with _progress() as progress, workspace.lm_context():
            bar = progress.add_task("Building profiles", total=len(users))
            for name in users:
                progress.update(bar, description=f"Building the profile of {name}")
                try:
                    profile = builder.build(workspace.store, name)
                except ProfileEchoError as exc:
                    failures += 1
                    err.print(f"[red]failed[/red] {name}: {exc}", highlight=False)
                else:
                    console.print(f"[bold]{name}[/bold] v{profile.version}: {profile.text}")
                progress.advance(bar)
    if failures:
        raise typer.Exit(1)


def _users(workspace, user: str | None, all_users: bool) -> list[str]:
    from persona_agent.core.errors import InvalidInputError

    if (user is None) == (not all_users):
        raise InvalidInputError("user", user, "give --user U or --all")
    if all_users:
        return workspace.store.users()
    return [workspace.require_user(user)]


# -- compile, ask -------------------------------------------------------------------------------------


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
) -> None:
    """Re-compile personas from users' latest interactions. Prints the estimate first, then runs."""
    from persona_agent.compiling import CompileOptions, plan_compile, run_compile

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
    with _workspace(lm=lm, needs_lm=True) as workspace:
        users = _users(workspace, user, all_users)
        plans, skipped = [], []
        for name in users:
            try:
                plans.append(plan_compile(workspace, name, options))
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
            table.add_row(
                plan.user_id,
                f"{e.get('batch') or len(plan.trainset)}{'*' * bool(e.get('capped'))}",
                *(str(e.get(k, "-")) for k in ("max_lm_calls", "simulate", "loss", "gradient", "update", "evaluate")),
            )
        console.print(table)
        for name, reason in skipped:
            console.print(f"[yellow]skipped[/yellow] {name}: {reason}")
        failures = 0
        results = Table(title="Compiled", title_justify="left")
        for column in ("user", "version", "changed", "live", "LM calls", "tokens", "stop"):
            results.add_column(column)
        runs: list[str] = []
        with _progress() as progress:
            bar = progress.add_task("Compiling", total=len(plans))
            for plan in plans:
                progress.update(bar, description=f"Compiling {plan.user_id}")
                try:
                    r = run_compile(workspace, plan)
                except PersonaAgentError as exc:
                    failures += 1
                    err.print(f"[red]failed[/red] {plan.user_id}: {exc}", highlight=False)
                else:
                    results.add_row(
                        r.user_id,
                        f"v{r.version} (from v{r.parent})" if r.changed else f"v{r.version}",
                        "yes" if r.changed else "no",
                        "yes" if r.promoted else "no",
                        str(r.usage.get("calls", "")),
                        str(r.usage.get("total_tokens", "")),
                        r.stop_reason,
                    )
                    runs.append(f"{r.user_id}: MLflow run {r.mlflow_run_id}")
                    if r.changed and r.persona_check != "ok":
                        held = "made live anyway" if r.promoted else "not made live"
                        err.print(
                            f"[yellow]persona_check[/yellow] {r.user_id} v{r.version}: {r.persona_check}; {held}. "
                            f"Review: persona-agent personas show --user {r.user_id} --version {r.version}",
                            highlight=False,
                        )
                    if r.tracking_error:
                        err.print(f"[yellow]MLflow[/yellow] {r.user_id}: {r.tracking_error}", highlight=False)
                progress.advance(bar)
        console.print(results)
        for line in runs:
            typer.echo(line)
        typer.echo(f"See the runs: mlflow ui --backend-store-uri {workspace.settings.resolved_tracking_uri}")
    if failures:
        raise typer.Exit(1)


@app.command()
@exit_codes
def ask(
    request: Annotated[str, typer.Argument(help="What the user asks.")],
    user: UserOption,
    version: Annotated[str | None, typer.Option(help="A version, alias, run id or models:/ URI.")] = None,
    lm: LMOption = None,
) -> None:
    """Answer one request with the user's live persona (or `--version`)."""
    with _workspace(lm=lm, needs_lm=True) as workspace, err.status(f"Answering for {user}..."):
        workspace.require_user(user)
        if version is not None and not version.isdigit() and version not in ("live", "champion", "latest"):
            agent = workspace.load_program(user, version)
            with workspace.lm_context():
                prediction = agent(**workspace.inputs_for(agent, request))
            text = str(prediction[next(iter(agent.task_signature.output_fields))])
            label = version
        else:
            answer = workspace.respond(user, request, version=version)
            text, label = answer.text, f"v{answer.persona_version}"
    typer.echo(text)
    err.print(f"({user}@{label})", highlight=False)


# -- personas -----------------------------------------------------------------------------------------


@personas_app.command("list")
@exit_codes
def personas_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="One user's versions.")] = None,
) -> None:
    """Every user's live version, or every version of one user."""
    with _workspace() as workspace:
        registry = workspace.registry
        if user is None:
            table = Table(title="Live personas", title_justify="left")
            for column in ("user", "live", "revision", "versions", "updated"):
                table.add_column(column)
            live = registry.live_versions()
            for name in registry.users():
                state = live.get(name)
                table.add_row(
                    name,
                    f"v{state.version}" if state else "-",
                    str(state.revision) if state else "-",
                    str(len(registry.history(name))),
                    f"{state.updated_at:%Y-%m-%d %H:%M}" if state else "-",
                )
        else:
            history = registry.history(user)
            if not history:
                workspace.require_user(user)
            state = registry.live(user)
            table = Table(title=f"Personas of {user}", title_justify="left")
            for column in ("version", "live", "source", "parent", "strategy", "created (UTC)", "run"):
                table.add_column(column, no_wrap=True)
            for r in history:
                table.add_row(
                    f"v{r.version}",
                    "*" if state and state.version == r.version else "",
                    r.source,
                    "" if r.parent is None else f"v{r.parent}",
                    r.strategy or "",
                    f"{r.created_at:%m-%d %H:%M}",
                    (r.mlflow_run_id or "")[:8],  # `personas show` prints the whole id
                )
    console.print(table)


@personas_app.command("show")
@exit_codes
def personas_show(user: UserOption, version: Annotated[str, typer.Option(help="A version or alias.")] = "live") -> None:
    """Print one persona version's text and metadata."""
    with _workspace() as workspace:
        record = workspace.registry.get(user, version)
    err.print(
        f"{user}@v{record.version} source={record.source} parent={record.parent} strategy={record.strategy} "
        f"run={record.mlflow_run_id}",
        highlight=False,
    )
    typer.echo(record.text)


@personas_app.command("diff")
@exit_codes
def personas_diff(
    user: UserOption,
    a: Annotated[str, typer.Argument(help="The older version (or alias).")],
    b: Annotated[str, typer.Argument(help="The newer version (default: live).")] = "live",
) -> None:
    """A unified diff between two persona versions."""
    with _workspace() as workspace:
        text = workspace.registry.diff(user, a, b)
    typer.echo(text or "(no difference)", nl=not text)


@personas_app.command("promote")
@exit_codes
def personas_promote(
    user: UserOption,
    version: Annotated[str, typer.Argument(help="The version to make live.")],
    expected_revision: Annotated[int | None, typer.Option(help="Refuse if the live revision is not this.")] = None,
) -> None:
    """Make a version live (optimistic lock with --expected-revision)."""
    with _workspace() as workspace:
        change = workspace.promote(user, version, expected_revision=expected_revision)
    _report_change(change)


@personas_app.command("rollback")
@exit_codes
def personas_rollback(
    user: UserOption,
    to: Annotated[str | None, typer.Option(help="The version to restore (default: the previous live one).")] = None,
    expected_revision: Annotated[int | None, typer.Option(help="Refuse if the live revision is not this.")] = None,
) -> None:
    """Restore an earlier version as a new live version."""
    with _workspace() as workspace:
        change = workspace.rollback(user, to, expected_revision=expected_revision)
    _report_change(change)


def _report_change(change) -> None:
    live = change.live
    typer.echo(
        f"{live.user_id}: v{live.version} is live (revision {live.revision}, source {change.record.source})"
        + (f"; MLflow model version {change.model_version}" if change.model_version else "")
    )
    if change.tracking_error:
        err.print(f"[yellow]MLflow[/yellow]: {change.tracking_error}", highlight=False)


# -- forget, serve, token -----------------------------------------------------------------------------


@app.command()
@exit_codes
def forget(
    user: UserOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Forget a user everywhere: memory rows and vectors, profiles, personas, MLflow runs and model, caches."""
    from persona_agent.stores.validation import validate_user_id

    user = validate_user_id(user)
    if not yes:
        typer.confirm(f"Forget everything about {user!r}?", abort=True)
    with _workspace() as workspace:
        report = workspace.forget(user)
        # A command is a short process: rewrite the database now rather than when the compaction is due.
        report = report.model_copy(update={"erased_by": workspace.store.compact()})
    table = Table(title=f"Forgot {user}", title_justify="left")
    table.add_column("what")
    table.add_column("removed", justify="right")
    rows = {"interactions": report.interactions, "vectors": report.vectors, "profiles": report.profiles, **report.extra}
    for what, count in rows.items():
        table.add_row(what, str(count))
    console.print(table)
    console.print(f"Erased from disk: {report.erased_by:%Y-%m-%d %H:%M:%S} UTC (the database file was rewritten).")


@app.command()
@exit_codes
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port.")] = 8000,
    lm: LMOption = None,
) -> None:
    """Run the HTTP service (needs the `serve` extra). Makes and prints an admin API key if none is set; refuses
    (exit 2) a key that is set but weak, or a weak token secret."""
    import secrets

    import uvicorn
    from pydantic import SecretStr

    from persona_agent.lm.models import make_lm
    from persona_agent.service import create_app
    from persona_agent.service.auth import Authenticator

    settings = _settings(lm)
    if settings.api_key is None:  # unset (set but empty is a weak key, refused below)
        key = secrets.token_urlsafe(32)
        settings = settings.model_copy(update={"api_key": SecretStr(key)})
        err.print(f"No PERSONA_AGENT_API_KEY set: this run's admin API key is [bold]{key}[/bold]")
    Authenticator(settings)  # refuse weak secrets before the LM is made
    uvicorn.run(create_app(settings, lm=make_lm(settings=settings)), host=host, port=port)


@app.command()
@exit_codes
def token(
    user: UserOption,
    ttl: Annotated[
        int | None, typer.Option(min=1, max=31_536_000, help="Seconds until it expires (default: token_ttl_seconds).")
    ] = None,
) -> None:
    """Mint a user token for the service (needs PERSONA_AGENT_API_KEY or PERSONA_AGENT_TOKEN_SECRET, strong)."""
    from persona_agent.service.auth import mint_token, token_secret

    settings = _settings()
    typer.echo(mint_token(user, token_secret(settings), ttl_seconds=ttl or settings.token_ttl_seconds))
