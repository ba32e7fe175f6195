"""Memory commands: `ingest` (episodic memory) and `profile build` (semantic memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from persona_agent.cli.common import (
    LMOption,
    app,
    console,
    err,
    exit_codes,
    profile_app,
    progress,
    settings,
    users_of,
    workspace,
)


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

    records = read_records(
        path,
        fmt=fmt,
        user=user,
        user_column=user_column,
        task=task,
        outputs=outputs,
        max_chars=settings().max_text_chars,
    )
    if not records:
        raise InvalidInputError("path", str(path), "holds no records")
    with workspace() as ws, progress() as bars:
        bars.console.print(f"Read {len(records)} records from {path.name}; writing them in one transaction.")
        bar = bars.add_task(f"Ingesting {path.name}", total=len(records))
        report = ws.store.ingest(records, batch_size=batch, progress=lambda n: bars.advance(bar, n))
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
    with workspace(lm=lm, needs_lm=True) as ws:
        users = users_of(ws, user, all_users)
        builder = ProfileBuilder()
        with progress() as bars, ws.lm_context():
            bar = bars.add_task("Building profiles", total=len(users))
            for name in users:
                bars.update(bar, description=f"Building the profile of {name}")
                try:
                    profile = builder.build(ws.store, name)
                except ProfileEchoError as exc:
                    failures += 1
                    err.print(f"[red]failed[/red] {name}: {exc}", highlight=False)
                else:
                    console.print(f"[bold]{name}[/bold] v{profile.version}: {profile.text}")
                bars.advance(bar)
    if failures:
        raise typer.Exit(1)
