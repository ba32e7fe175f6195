"""`persona-agent demo`: the offline demo on real HuffPost articles (authors as users)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persona_agent.cli.common import app, console
from persona_agent.core.errors import PersonaAgentError

DEFAULT_DATA = Path("../shared/data")


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="The shared data folder (see SOURCES.md there).")] = DEFAULT_DATA,
    articles: Annotated[int, typer.Option(min=1, help="HuffPost articles to ingest.")] = 1000,
    authors: Annotated[int, typer.Option(min=1, help="Authors to search for.")] = 3,
    agent: Annotated[bool, typer.Option(help="Also run the persona agent with the LM (minutes offline).")] = True,
    lm: Annotated[str | None, typer.Option(help="LM spec (default: the setting, 'local').")] = None,
) -> None:
    """Run the offline demo on real HuffPost articles (authors as users)."""
    from persona_agent.demo import run_demo

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
