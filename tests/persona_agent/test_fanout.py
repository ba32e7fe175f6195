"""Compiling many users with both job runners and the scripted LM: each user compiled exactly once, a failing
user reported while the others go on, a killed worker's user retried, a rerun a no-op, selection and budget."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dspy.lm15 import Message, Response, TextPart, Usage

from persona_agent.compiling import CompileOptions
from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError
from persona_agent.fanout import Budget, compile_all, select_users
from persona_agent.fanout_worker import WorkerSetup
from persona_agent.lm.hosted import HOST_PREFIX, hosted_lm, stop_hosts
from persona_agent.runners import Job, LocalRunner, make_runner, run_jobs
from persona_agent.service.jobs import JobManager
from persona_agent.testing import ScriptedLM
from tests.support import ANSWER, CONCISE, REACT, history, make_workspace, persona_script

ROOT = Path(__file__).resolve().parents[2]
USERS = ["ann", "bob", "cat", "bad", "flaky"]
PLANNED = "request -> response"
MARKER_ENV = "PERSONA_AGENT_TEST_FLAKY_MARKER"


def _tripwire(call) -> None:
    """The user `bad` always fails; `flaky` fails once (a Ray worker process dies; a thread raises)."""
    text = call.messages[-1]["content"]
    if "about bad" in text:
        raise RuntimeError("the LM refused user bad")
    marker = Path(os.environ[MARKER_ENV])
    if "about flaky" in text and not marker.exists():
        marker.write_text("tripped", encoding="utf-8")
        if os.environ.get("PERSONA_AGENT_TEST_KILL") == "1":
            os._exit(1)  # a worker process killed mid-job
        raise RuntimeError("a worker lost mid-job")


def fanout_lm() -> ScriptedLM:
    """The support script, with the tripwire in the agent's first step (module-level: Ray workers import it)."""
    script = persona_script()
    react, answer = script[REACT], script[ANSWER]

    def step(call):
        _tripwire(call)
        return react

    script[REACT] = step
    script[ANSWER] = answer
    return ScriptedLM(script)


def hosted_fanout_engine():
    """The fan-out script's engine, built in the node's model host actor instead of the local model. The LM is
    then local to DSPy (`is_local`), so the agent runs planned: its one answer step trips the wire."""
    script = persona_script()
    answer = script[ANSWER]

    def planned(call):
        _tripwire(call)
        return answer(call)

    script[PLANNED] = planned
    return ScriptedLM(script).engine


class EchoEngine:
    """A stand-in for the local engine in the host: answers `<its pid>: <the question>`."""

    def complete(self, request) -> Response:
        text = f"{os.getpid()}: {request.messages[-1].text}"
        return Response(
            id=None,
            model=request.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop",
            usage=Usage(),
        )


def ask_host(question: str, settings: Settings) -> tuple[int, str]:
    """A Ray task: ask the local-spec LM (its engine hosted by the node's actor) one question."""
    return os.getpid(), hosted_lm(settings, EchoEngine)(question)[0]


def _user_history(user: str, n: int = 3) -> list[dict]:
    return [{**row, "query": f"{row['query']} about {user}"} for row in history(n)]


@pytest.fixture
def workspace(tracking_home, embedder, tmp_path, monkeypatch):
    monkeypatch.setenv(MARKER_ENV, str(tmp_path / "flaky.marker"))
    ws = make_workspace(embedder, lm=fanout_lm())
    for user in USERS:
        ws.store.add(user, _user_history(user))
    yield ws
    ws.close()


def _check_once(workspace, report) -> None:
    assert sorted(r.user_id for r in report.compiled) == ["ann", "bob", "cat", "flaky"]
    assert set(report.failed) == {"bad"} and "the LM refused user bad" in report.failed["bad"]
    assert report.attempts["bad"] == 3 and report.attempts["flaky"] == 2 and report.attempts["ann"] == 1
    for user in ("ann", "bob", "cat", "flaky"):
        versions = [r.version for r in workspace.registry.history(user)]
        assert versions == [0, 1] and workspace.registry.get(user).text == CONCISE
    assert [r.version for r in workspace.registry.history("bad")] == [0]


def test_local_runner_compiles_each_user_once_reports_the_failure_retries_and_reruns_as_a_noop(workspace):
    runner = LocalRunner(workers=3)
    try:
        report = compile_all(workspace, CompileOptions(n=2), runner, retries=2)
        _check_once(workspace, report)
        watermark = workspace.registry.get("ann").usage["interaction_watermark"]
        assert watermark == workspace.store.query("SELECT max(seq) FROM interactions WHERE user_id = 'ann'")[0][0]
        again = compile_all(workspace, CompileOptions(n=2), runner, retries=0)
    finally:
        runner.close()
    assert again.compiled == [] and set(again.attempts) == {"bad"}  # only the user never compiled is selected
    assert [r.version for r in workspace.registry.history("ann")] == [0, 1]


def test_selection_needs_enough_new_interactions_and_orders_by_them(workspace):
    workspace.store.add("cat", _user_history("cat", 5))  # two more (the first three repeat: skipped)
    assert select_users(workspace, 1)[0].user_id == "cat"  # 5 new, the others 3
    assert [c.user_id for c in select_users(workspace, 4)] == ["cat"]
    with pytest.raises(InvalidInputError) as info:
        select_users(workspace, 0)
    assert info.value.field == "min_new"


def test_a_spent_budget_starts_no_new_user(workspace):
    runner = LocalRunner(workers=1)
    try:
        report = compile_all(
            workspace, CompileOptions(n=2), runner, budget=Budget(max_lm_calls=1), users=["ann", "bob"]
        )
    finally:
        runner.close()
    assert len(report.compiled) == 1 and report.stopped_by == "max_lm_calls"
    assert list(report.skipped.values()) == ["budget spent (max_lm_calls)"]


def test_run_jobs_retries_then_reports_and_rejects_bad_settings():
    seen: list[int] = []

    def flaky(n: int) -> int:
        seen.append(n)
        if n == 2 and seen.count(2) < 2:
            raise OSError("lost")
        if n == 3:
            raise ValueError("always")
        return n * 10

    runner = LocalRunner(workers=2)
    try:
        outcomes = {o.key: o for o in run_jobs(runner, [Job(str(n), flaky, (n,)) for n in (1, 2, 3)], retries=1)}
    finally:
        runner.close()
    assert (outcomes["1"].value, outcomes["2"].value, outcomes["2"].attempts) == (10, 20, 2)
    assert outcomes["3"].error == "ValueError: always" and outcomes["3"].attempts == 2
    for name, workers in (("local", 0), ("spark", 1)):
        with pytest.raises(InvalidInputError):
            make_runner(name, workers)


def _embedder():
    from persona_agent.stores.embeddings import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


def test_ray_runner_in_local_mode_compiles_once_and_retries_a_killed_worker(workspace, monkeypatch):
    pytest.importorskip("ray")  # installed by the `ray` extra, which `all` (CI's install) includes
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("PERSONA_AGENT_TEST_KILL", "1")  # Ray workers inherit the environment
    runner = make_runner("ray", 2, num_cpus=2, cpus_per_job=workspace.settings.ray_cpus_per_job)
    assert runner.cpus_per_job == 0.25  # four tasks a core: they wait on the LM
    setup = WorkerSetup(workspace.settings, lm=fanout_lm, embedder=_embedder)
    try:
        report = compile_all(workspace, CompileOptions(n=2), runner, retries=2, setup=setup)
        _check_once(workspace, report)
        again = compile_all(workspace, CompileOptions(n=2), runner, retries=0, setup=setup, users=["ann", "bob"])
    finally:
        runner.close()
    assert again.compiled == [] and again.attempts == {}


def test_service_jobs_retry_the_optimizer_and_commit_once(workspace):
    jobs = JobManager(workspace, workers=2, retries=2)
    try:
        flaky = jobs.submit("flaky", CompileOptions(n=2))
        bad = jobs.submit("bad", CompileOptions(n=2))
        jobs.shutdown(wait=True)
    finally:
        jobs.shutdown(wait=False)
    flaky, bad = jobs.get(flaky.id), jobs.get(bad.id)
    assert (flaky.status, flaky.attempts, flaky.result["version"]) == ("succeeded", 2, 1)
    assert [r.version for r in workspace.registry.history("flaky")] == [0, 1]  # the retry made no second version
    assert (bad.status, bad.attempts) == ("failed", 3) and "the LM refused user bad" in bad.error
    assert [r.version for r in workspace.registry.history("bad")] == [0]


def _ray_runner(monkeypatch):
    pytest.importorskip("ray")  # installed by the `ray` extra, which `all` (CI's install) includes
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return make_runner("ray", 4, num_cpus=2, cpus_per_job=0.25)


def test_ray_tasks_on_a_node_share_one_model_host_and_each_gets_its_answer(tmp_path, monkeypatch):
    runner = _ray_runner(monkeypatch)
    settings = Settings(home=tmp_path / "home", lm="local", lm_cache=False, local_slots=2)
    questions = [f"question {n}" for n in range(8)]
    try:
        outcomes = list(run_jobs(runner, [Job(q, ask_host, (q, settings)) for q in questions], retries=0))
        hosts = [name for name in runner.ray.util.list_named_actors() if name.startswith(HOST_PREFIX)]
        stats = runner.ray.get(runner.ray.get_actor(hosts[0]).stats.remote())
        assert stop_hosts() == hosts and not runner.ray.util.list_named_actors()
    finally:
        runner.close()
    assert all(o.ok for o in outcomes) and len(hosts) == 1
    answers = {o.key: o.value for o in outcomes}
    assert {q: text.split(": ", 1)[1] for q, (_, text) in answers.items()} == {q: q for q in questions}
    served_by = {int(text.split(":")[0]) for _, text in answers.values()}
    assert served_by == {stats["pid"]} and stats["served"] == len(questions)  # one host process answered all
    assert stats["pid"] not in {pid for pid, _ in answers.values()}  # never the task's own process


def test_ray_compile_fanout_with_the_local_model_hosted_once_per_node(workspace, monkeypatch):
    runner = _ray_runner(monkeypatch)
    settings = workspace.settings.model_copy(update={"lm": "local"})
    setup = WorkerSetup(settings, embedder=_embedder, host=hosted_fanout_engine)
    try:
        report = compile_all(workspace, CompileOptions(n=2), runner, retries=2, setup=setup)
        hosts = [name for name in runner.ray.util.list_named_actors() if name.startswith(HOST_PREFIX)]
        stats = runner.ray.get(runner.ray.get_actor(hosts[0]).stats.remote())
    finally:
        runner.close()
    _check_once(workspace, report)
    assert len(hosts) == 1 and stats["served"] >= 4 * len(report.compiled)  # every LM call went to the host
    with pytest.raises(InvalidInputError) as info:
        WorkerSetup(settings.model_copy(update={"lm": "openai/gpt-4o-mini"}), host=hosted_fanout_engine)
    assert info.value.field == "host"
