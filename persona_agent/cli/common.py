"""What every `persona-agent` command shares: the Typer apps, the consoles, the exit-code mapping, options, and
the one place a command opens its workspace.

`persona_agent.cli.open_workspace` is the seam tests replace (`monkeypatch.setattr(cli, "open_workspace", ...)`)
to give commands a scripted LM and an already loaded embedder; `workspace()` looks it up there at call time.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import persona_agent.cli as package
from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, PersonaAgentError
from persona_agent.evaluation.cli import eval_app

if TYPE_CHECKING:
    from persona_agent.workspace import Workspace

app = typer.Typer(help="PersonaAgent: personalized LLM agents as DSPy-compiled prompt programs.", no_args_is_help=True)
profile_app = typer.Typer(help="Semantic memory: build user profiles.", no_args_is_help=True)
personas_app = typer.Typer(help="Persona versions: list, show, diff, promote, roll back.", no_args_is_help=True)
app.add_typer(profile_app, name="profile")
app.add_typer(personas_app, name="personas")
app.add_typer(eval_app, name="eval")
console = Console()
# No wrapping at the terminal width (80 columns when stderr is a file or pipe): a message is one line to grep.
err = Console(stderr=True, soft_wrap=True)

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


def settings(lm: str | None = None) -> Settings:
    return Settings(lm=lm) if lm else Settings()


def open_workspace(settings: Settings, *, needs_lm: bool) -> Workspace:
    """The workspace of one command, with the settings' LM if the command needs one. (Imported here, as every
    command's heavy dependency is, so `--help` and bad input answer at once.)"""
    from persona_agent.lm.models import make_lm
    from persona_agent.workspace import Workspace

    return Workspace(settings, lm=make_lm(settings=settings) if needs_lm else None)


def workspace(*, lm: str | None = None, needs_lm: bool = False) -> Workspace:
    """A command's workspace, through `persona_agent.cli.open_workspace` (the seam tests replace)."""
    return package.open_workspace(settings(lm), needs_lm=needs_lm)


def progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


def users_of(workspace: Workspace, user: str | None, all_users: bool) -> list[str]:
    """The users a command runs for: `--user U` (who must exist) or `--all`, exactly one of them."""
    if (user is None) == (not all_users):
        raise InvalidInputError("user", user, "give --user U or --all")
    if all_users:
        return workspace.store.users()
    return [workspace.require_user(user)]
