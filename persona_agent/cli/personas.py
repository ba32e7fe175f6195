"""`personas list|show|diff|promote|rollback`: a user's persona versions and the live pointer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from persona_agent.cli.common import UserOption, console, err, exit_codes, personas_app, workspace

if TYPE_CHECKING:
    from persona_agent.lifecycle import PersonaChange
    from persona_agent.stores.personas import PersonaRegistry


@personas_app.command("list")
@exit_codes
def personas_list(
    user: Annotated[str | None, typer.Option("--user", "-u", help="One user's versions.")] = None,
) -> None:
    """Every user's live version, or every version of one user."""
    with workspace() as ws:
        if user is None:
            table = _live_table(ws.registry)
        else:
            if not ws.registry.history(user):
                ws.require_user(user)
            table = _history_table(ws.registry, user)
    console.print(table)


def _live_table(registry: PersonaRegistry) -> Table:
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
    return table


def _history_table(registry: PersonaRegistry, user: str) -> Table:
    state = registry.live(user)
    table = Table(title=f"Personas of {user}", title_justify="left")
    for column in ("version", "live", "source", "parent", "strategy", "created (UTC)", "run"):
        table.add_column(column, no_wrap=True)
    for r in registry.history(user):
        table.add_row(
            f"v{r.version}",
            "*" if state and state.version == r.version else "",
            r.source,
            "" if r.parent is None else f"v{r.parent}",
            r.strategy or "",
            f"{r.created_at:%m-%d %H:%M}",
            (r.mlflow_run_id or "")[:8],  # `personas show` prints the whole id
        )
    return table


@personas_app.command("show")
@exit_codes
def personas_show(user: UserOption, version: Annotated[str, typer.Option(help="A version or alias.")] = "live") -> None:
    """Print one persona version's text and metadata."""
    with workspace() as ws:
        record = ws.registry.get(user, version)
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
    with workspace() as ws:
        text = ws.registry.diff(user, a, b)
    typer.echo(text or "(no difference)", nl=not text)


@personas_app.command("promote")
@exit_codes
def personas_promote(
    user: UserOption,
    version: Annotated[str, typer.Argument(help="The version to make live.")],
    expected_revision: Annotated[int | None, typer.Option(help="Refuse if the live revision is not this.")] = None,
) -> None:
    """Make a version live (optimistic lock with --expected-revision)."""
    with workspace() as ws:
        change = ws.promote(user, version, expected_revision=expected_revision)
    _report_change(change)


@personas_app.command("rollback")
@exit_codes
def personas_rollback(
    user: UserOption,
    to: Annotated[str | None, typer.Option(help="The version to restore (default: the previous live one).")] = None,
    expected_revision: Annotated[int | None, typer.Option(help="Refuse if the live revision is not this.")] = None,
) -> None:
    """Restore an earlier version as a new live version."""
    with workspace() as ws:
        change = ws.rollback(user, to, expected_revision=expected_revision)
    _report_change(change)


def _report_change(change: PersonaChange) -> None:
    live = change.live
    typer.echo(
        f"{live.user_id}: v{live.version} is live (revision {live.revision}, source {change.record.source})"
        + (f"; MLflow model version {change.model_version}" if change.model_version else "")
    )
    if change.tracking_error:
        err.print(f"[yellow]MLflow[/yellow]: {change.tracking_error}", highlight=False)
