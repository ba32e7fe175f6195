"""`persona-agent demo`: the whole loop on the shipped sample; `--data DIR`: the real-data demo (HuffPost authors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from persona_agent.cli.common import app, console, err, settings
from persona_agent.core.errors import PersonaAgentError


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
            report = run_sample_demo(settings().home / "demo", lm=lm, console=console)
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
