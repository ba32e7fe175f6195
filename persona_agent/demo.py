"""`persona-agent demo`: the whole loop on the sample shipped in the package, in a fresh home of its own.

Ingest five writers' news items (`persona_agent/sample/`), build one user's profile, make her initial persona,
answer a new article with it, compile the persona under a call cap planned so the round completes its update,
show the persona diff, answer again, point at the MLflow run, then load the program back from that run with
`load_program` and answer through the OpenAI-compatible app in-process (a user token, FastAPI's `TestClient`).

Each run starts from an empty home: the demo's folder is removed (only a folder this demo made, marked as such)
and made again, so running it twice gives the same loop. The real-data demo is `persona_agent.demo_huffpost` (`persona-agent demo --data DIR`).
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import dspy
from fastapi.testclient import TestClient
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from persona_agent.answering import Answer
from persona_agent.compiling import CompileOptions, CompileResult, plan_compile, run_compile
from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError, PersonaAgentError, ProfileEchoError
from persona_agent.core.usage import track_usage
from persona_agent.ingest import read_records
from persona_agent.lm.models import make_lm
from persona_agent.loading import load_program
from persona_agent.programs.persona_agent import resolve_mode
from persona_agent.programs.profile import ProfileBuilder
from persona_agent.programs.saved import ProgramSpec
from persona_agent.service import create_app
from persona_agent.service.auth import mint_token, token_secret
from persona_agent.signatures.tasks import CategorizeArticle
from persona_agent.stores.embeddings import Embedder
from persona_agent.workspace import Workspace, persona_of

SAMPLE_FILE = "news.jsonl"
MARKER = ".persona-agent-demo"
QUESTION = (
    "A new AI model translates sign language into speech in real time. "
    "The researchers trained it on videos from 500 signers."
)
# The program the demo compiles and serves: one LM call per answer (no tool loop), so the loop takes minutes on a
# CPU. Its mode is "auto": planned (one answer call scored over the closed label set) on the offline model, the
# direct call otherwise; the demo prints which. Another agent is this one argument (`DemoOptions.spec`).
DEMO_SPEC = ProgramSpec(signature=CategorizeArticle, use_actions=False, allow_updates=False)
STEPS = (
    "ingest",
    "profile",
    "initial persona",
    "answer",
    "with memory",
    "compile",
    "diff",
    "answer again",
    "MLflow",
    "serve",
)


class DemoServiceError(PersonaAgentError):
    """The in-process service did not answer the demo's chat completion."""


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs: whose persona it compiles, on what, under which cap, with which program."""

    user: str = "ada"
    question: str = QUESTION
    expected: str = "business"  # what `user` files such a story under (persona_agent/sample/README.md)
    n: int = 2
    max_lm_calls: int = 7  # the plan's worst case for two examples is 6; one call spare for an adapter retry
    update: Literal["rewrite", "edit"] = "edit"
    spec: ProgramSpec = DEMO_SPEC


@dataclass
class DemoReport:
    """What the demo did, step by step (the CLI prints it as it goes; tests read it)."""

    home: Path
    mode: str = ""  # the agent mode the answers ran in ("auto" resolved for the LM in use)
    users: int = 0
    interactions: int = 0
    profile: str | None = None
    persona_v0: str = ""
    before: Answer | None = None
    with_memory: Answer | None = None  # v0 with the user's nearest past interactions as demos
    compiled: CompileResult | None = None
    diff: str = ""
    after: Answer | None = None
    artifacts: list[str] = field(default_factory=list)
    mlflow_ui: str = ""
    loaded: str = ""
    served: dict[str, Any] = field(default_factory=dict)
    lm_calls: dict[str, int] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def sample_path() -> Path:
    """The shipped sample file (package data, so a wheel has it too)."""
    return Path(str(resources.files("persona_agent") / "sample" / SAMPLE_FILE))


def fresh_home(root: Path) -> Path:
    """A new, empty home for one run under `root`, after removing what an earlier run left there; a `root` this
    demo did not make (no marker) that holds something is refused. Each run gets a folder of its own so nothing
    a process still holds open from an earlier run (an MLflow database engine, a response cache) points at it."""
    root = Path(root)
    if root.exists():
        if not (root / MARKER).is_file() and any(root.iterdir()):
            raise InvalidInputError("home", str(root), "holds files the demo did not make: give an empty folder")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by `persona-agent demo`, which removes and remakes this folder\n")
    home = root / f"run-{datetime.now(UTC):%Y%m%d-%H%M%S-%f}"
    home.mkdir()
    return home


def demo_settings(home: Path) -> Settings:
    """Settings whose every path is under `home`, with the labelled news task (so compiles have a metric)."""
    paths = {"db_path": None, "cache_dir": None, "mlflow_tracking_uri": None, "mlflow_artifact_location": None}
    return Settings(home=home, task_signature="CategorizeArticle", **paths)


class DemoView:
    """Rich progress over the demo's steps, with each step's output printed above the bar."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("demo", total=len(STEPS))
        self.print = self.progress.console.print
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, status: str) -> Iterator[None]:
        self.progress.update(self.task, description=status)
        started = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - started, 1)
        self.progress.advance(self.task)
        self.progress.update(self.task, description=f"{name} done")


def _calls(meter: Any) -> int:
    return meter.report().calls


def ingest_sample(ws: Workspace, view: DemoView, report: DemoReport) -> None:
    records = read_records(sample_path(), max_chars=ws.settings.max_text_chars)
    bar = view.progress.add_task(f"ingesting {SAMPLE_FILE}", total=len(records))
    done = ws.store.ingest(records, batch_size=16, progress=lambda n: view.progress.advance(bar, n))
    view.progress.remove_task(bar)
    report.users, report.interactions = len(ws.store.users()), done.added
    view.print(f"[bold]1. ingest[/bold]: {done.added} news items of {report.users} users into {ws.settings.home}")


def build_profile(ws: Workspace, user: str, view: DemoView, report: DemoReport) -> None:
    with track_usage() as meter, ws.lm_context():
        try:
            report.profile = ProfileBuilder().build(ws.store, user).text
        except ProfileEchoError as exc:  # a small LM may hand its prompt back: the persona starts without a profile
            view.print(f"[yellow]profile[/yellow]: {exc}")
    report.lm_calls["profile"] = _calls(meter)
    view.print(
        f"[bold]2. profile[/bold] of {user} (semantic memory, summarised by the LM): {escape(str(report.profile))}"
    )
    report.persona_v0 = ws.registry.get(user, ws.ensure_persona(user).version).text


def report_mode(ws: Workspace, options: DemoOptions) -> str:
    """The mode the agent answers in with this workspace's LM (`auto` resolves per LM: planned for the local one)."""
    return resolve_mode(options.spec.mode, ws.lm)


def answer(ws: Workspace, options: DemoOptions, label: str, view: DemoView) -> Answer:
    reply = ws.respond(options.user, options.question)
    view.print(
        f"[bold]{label}[/bold] (persona v{reply.persona_version}, {report_mode(ws, options)} mode): "
        f"{escape(reply.text)}   "
        f"[dim]({options.user} files such stories under {options.expected})[/dim]"
    )
    return reply


def answer_with_memory(ws: Workspace, options: DemoOptions, view: DemoView) -> Answer:
    """The same question and persona with the user's memory: the planned agent searches it and shows the nearest
    past interactions to the model as DSPy demos (earlier turns). The compile's program answers without memory,
    so that the persona alone has something to learn."""
    number = ws.live_version(options.user)
    spec = replace(options.spec, use_actions=True, tools=("search_memory",))
    agent = ws.factory.for_user(spec, options.user, persona_of(ws.registry.get(options.user, number)))
    reply = ws.answer_with(agent, number, options.question)
    view.print(
        f"[bold]4b. with memory[/bold] (persona v{number}, {report_mode(ws, options)} mode, {agent.k} nearest past "
        f"items shown): {escape(reply.text)}"
    )
    return reply


def estimate_table(estimate: dict[str, Any]) -> Table:
    table = Table(title="Compile estimate (most LM calls, planned under the cap)", title_justify="left")
    keys = ("batch", "simulate", "loss", "gradient", "update", "max_lm_calls")
    for key in keys:
        table.add_column(key, justify="right")
    table.add_row(*(str(estimate.get(k, "-")) for k in keys))
    return table


def compile_persona(ws: Workspace, options: DemoOptions, view: DemoView, report: DemoReport) -> CompileResult:
    opts = CompileOptions(n=options.n, max_lm_calls=options.max_lm_calls, update=options.update)
    plan = plan_compile(ws, options.user, opts)
    view.print(estimate_table(plan.estimate))
    result = run_compile(ws, plan)
    report.lm_calls["compile"] = int(result.usage.get("calls", 0))
    state = (
        f"v{result.version} (from v{result.parent}), live"
        if result.changed
        else "no new version (see the run's alignment trace)"
    )
    view.print(f"[bold]5. compile[/bold]: {state}; {result.usage.get('calls', 0)} LM calls; stop: {result.stop_reason}")
    return result


def show_run(ws: Workspace, result: CompileResult, view: DemoView, report: DemoReport) -> None:
    report.mlflow_ui = f"mlflow ui --backend-store-uri {ws.settings.resolved_tracking_uri}"
    if result.mlflow_run_id is None:
        view.print(f"[yellow]8. MLflow[/yellow]: no run ({result.tracking_error or 'nothing changed'})")
        return
    report.artifacts = sorted(a.path for a in ws.tracker.client.list_artifacts(result.mlflow_run_id))
    view.print(f"[bold]8. MLflow[/bold] run {result.mlflow_run_id} with {', '.join(report.artifacts)}")
    view.print(f"   see it: {report.mlflow_ui}")


def serve_answer(ws: Workspace, user: str, question: str) -> dict[str, Any]:
    """One chat completion from the OpenAI-compatible app over this workspace, in-process, with a user token."""
    settings = ws.settings.model_copy(update={"api_key": SecretStr(secrets.token_urlsafe(32))})
    token = mint_token(user, token_secret(settings), ttl_seconds=600)
    body = {"model": "persona-agent", "messages": [{"role": "user", "content": question}]}
    with TestClient(create_app(settings, workspace=ws)) as client:
        reply = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {token}"})
    if reply.status_code != 200:
        raise DemoServiceError(f"the service answered {reply.status_code}: {reply.text[:300]}")
    return reply.json()


def load_and_serve(ws: Workspace, options: DemoOptions, run_id: str | None, view: DemoView, report: DemoReport) -> None:
    source = run_id or "live"
    agent = load_program(options.user, run_id, workspace=ws)
    with track_usage() as meter, ws.lm_context():
        prediction = agent(**ws.inputs_for(agent, options.question))
    report.loaded = str(prediction[next(iter(agent.task_signature.output_fields))])
    report.lm_calls["loaded"] = _calls(meter)
    view.print(f"[bold]9. load_program[/bold]({options.user!r}, {source!r}) answers: {escape(report.loaded)}")
    report.served = serve_answer(ws, options.user, options.question)
    choice = report.served["choices"][0]["message"]["content"]
    view.print(f"   POST /v1/chat/completions as {report.served['system_fingerprint']}: {escape(choice)}")


def run_sample_demo(
    home: Path,
    *,
    lm: dspy.BaseLM | str | None = None,
    embedder: Embedder | None = None,
    options: DemoOptions | None = None,
    console: Console | None = None,
) -> DemoReport:
    """Run the loop on the shipped sample in `home` (removed and remade; see `fresh_home`). `lm`: an LM, or a
    spec for `make_lm` (default: the `lm` setting)."""
    options = options or DemoOptions()
    started = time.perf_counter()
    settings = demo_settings(fresh_home(home))
    model = lm if isinstance(lm, dspy.BaseLM) else make_lm(lm, settings=settings)
    report = DemoReport(home=settings.home)
    view = DemoView(console or Console())
    with Workspace(settings, embedder=embedder, lm=model, spec=options.spec) as ws, view.progress:
        _loop(ws, options, view, report)
    report.step_seconds = view.seconds
    report.seconds = round(time.perf_counter() - started, 1)
    return report


def _loop(ws: Workspace, options: DemoOptions, view: DemoView, report: DemoReport) -> None:
    user, question = options.user, options.question
    report.mode = report_mode(ws, options)
    with view.step("ingest", "ingesting the sample"):
        ingest_sample(ws, view, report)
    with view.step("profile", f"building {user}'s profile (1 LM call)"):
        build_profile(ws, user, view, report)
    with view.step("initial persona", "the initial persona"):
        view.print("[bold]3. initial persona[/bold] v0 (from the profile):")
        view.print(report.persona_v0, markup=False, highlight=False)
    with view.step("answer", "answering with v0"):
        tools = "" if options.spec.use_actions and options.spec.tools else ", without memory tools: one answer call"
        view.print(f"   the new article: {escape(question)}\n   the agent answers in {report.mode} mode{tools}")
        report.before = answer(ws, options, "4. answer", view)
    with view.step("with memory", "answering with v0 and the user's memory"):
        if report.mode == "planned":  # memory as demos; a ReAct agent would spend several calls on its tools
            report.with_memory = answer_with_memory(ws, options, view)
    with view.step("compile", f"compiling {user}'s persona (at most {options.max_lm_calls} LM calls)"):
        report.compiled = compile_persona(ws, options, view, report)
    with view.step("diff", "the persona diff"):
        report.diff = ws.registry.diff(user, 0, report.compiled.version)
        view.print("[bold]6. persona diff[/bold] (v0 -> the compiled version):")
        view.print(report.diff.rstrip("\n") or "(no difference)", markup=False, highlight=False)
    with view.step("answer again", "answering with the compiled persona"):
        report.after = answer(ws, options, "7. answer again", view)
    with view.step("MLflow", "the MLflow run"):
        show_run(ws, report.compiled, view, report)
    with view.step("serve", "load_program, then the OpenAI-compatible app"):
        run_id = report.compiled.mlflow_run_id if report.compiled.changed else None  # else: the live v0
        load_and_serve(ws, options, run_id, view, report)
    report.lm_calls["answers"] = sum(
        int(a.usage.get("calls", 0)) for a in (report.before, report.with_memory, report.after) if a
    )
