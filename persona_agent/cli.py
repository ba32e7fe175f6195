"""The `persona-agent` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from persona_agent.errors import PersonaAgentError

app = typer.Typer(help="PersonaAgent: personalized LLM agents as DSPy-compiled prompt programs.", no_args_is_help=True)
console = Console()

DEFAULT_DATA = Path("../shared/data")


def _offline_env() -> None:
    """Never reach a model hub or LiteLLM's remote cost map: everything here runs offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@app.callback()
def main() -> None:
    _offline_env()


@app.command()
def demo(
    data: Annotated[Path, typer.Option(help="The shared data folder (see SOURCES.md there).")] = DEFAULT_DATA,
    articles: Annotated[int, typer.Option(min=1, help="HuffPost articles to ingest.")] = 1000,
    authors: Annotated[int, typer.Option(min=1, help="Authors to search for.")] = 3,
) -> None:
    """Run the offline demo on real HuffPost articles (authors as users)."""
    from persona_agent.demo import run_demo

    try:
        with console.status("Ingesting and searching (the embedder loads on first use)..."):
            result = run_demo(data, articles=articles, authors=authors)
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
