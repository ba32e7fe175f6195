"""`forget` (a user, everywhere), `serve` (the HTTP service) and `token` (a user token for it)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from persona_agent.cli.common import LMOption, UserOption, app, console, err, exit_codes, settings, workspace


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
    with workspace() as ws:
        report = ws.forget(user)
        # A command is a short process: rewrite the database now rather than when the compaction is due.
        report = report.model_copy(update={"erased_by": ws.store.compact()})
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

    config = settings(lm)
    if config.api_key is None:  # unset (set but empty is a weak key, refused below)
        key = secrets.token_urlsafe(32)
        config = config.model_copy(update={"api_key": SecretStr(key)})
        err.print(f"No PERSONA_AGENT_API_KEY set: this run's admin API key is [bold]{key}[/bold]")
    Authenticator(config)  # refuse weak secrets before the LM is made
    uvicorn.run(create_app(config, lm=make_lm(settings=config)), host=host, port=port)


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

    config = settings()
    typer.echo(mint_token(user, token_secret(config), ttl_seconds=ttl or config.token_ttl_seconds))
