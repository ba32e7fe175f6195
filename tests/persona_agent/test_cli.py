"""The CLI through Typer's runner: every command's work and its exit codes (0 ok, 2 bad input with nothing
written, 1 failure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persona_agent import cli
from persona_agent.core.config import Settings
from persona_agent.service.auth import token_secret, verify_token
from persona_agent.stores import MemoryStore
from persona_agent.testing import ScriptedLM
from persona_agent.workspace import Workspace
from tests.support import CONCISE, PROFILE_ECHO, SHORT, held_by_another_process, museum_lm, opera_history, scripted_lm

LAMP = Path(__file__).parents[1] / "evaluation" / "fixtures"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _scripted(monkeypatch, embedder, tracking_home):
    """Commands get the scripted LM and the session's loaded embedder; everything else is real."""
    monkeypatch.setattr(
        cli,
        "open_workspace",
        lambda settings, *, needs_lm: Workspace(settings, embedder=embedder, lm=scripted_lm() if needs_lm else None),
    )


def run(*args: str, input: str | None = None):
    return runner.invoke(cli.app, list(args), input=input)


def count(embedder, user: str | None = None) -> int:
    path = Settings().resolved_db_path
    if not path.exists():
        return 0
    with MemoryStore(path, embedder=embedder) as store:
        return store.count(user)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def rows(user: str | None, n: int = 4) -> list[dict]:
    out = [{"query": f"question {i}", "response": "ok", "created_at": f"2024-01-0{i + 1}T00:00:00"} for i in range(n)]
    return [{**r, "user_id": user} for r in out] if user else out


def test_ingest_jsonl_csv_and_lamp(tmp_path, embedder):
    result = run("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows("alice") + rows("bob", 2))))
    assert result.exit_code == 0, result.output
    assert "Stored 6 interactions for 2 users" in result.stdout
    result = run("ingest", str(write_jsonl(tmp_path / "c.jsonl", rows(None, 2))), "--user", "carol")
    assert result.exit_code == 0 and count(embedder, "carol") == 2
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("who,query,response,mood\ndan,hello there,hi,happy\ndan,bye,see you,sad\n")
    result = run("ingest", str(csv_file), "--user-column", "who")
    assert result.exit_code == 0, result.output
    with MemoryStore(Settings().resolved_db_path, embedder=embedder) as store:
        assert [i.metadata for i in store.history("dan")] == [{"mood": "happy"}, {"mood": "sad"}]
    result = run(
        "ingest", str(LAMP / "lamp2n_questions.json"), "--format", "lamp", "--task", "LaMP-2N",
        "--outputs", str(LAMP / "lamp2n_outputs.json"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with MemoryStore(Settings().resolved_db_path, embedder=embedder) as store:
        lamp = store.history("210")
        assert lamp and all(i.task == "LaMP-2N" for i in lamp)


def test_bad_input_exits_2_and_writes_nothing(tmp_path, embedder):
    good = rows("alice", 3)
    bad_line = write_jsonl(tmp_path / "bad.jsonl", [*good, {"user_id": "alice", "response": "no query"}])
    result = run("ingest", str(bad_line))
    assert result.exit_code == 2 and "line 4" in result.stderr and "query" in result.stderr
    assert count(embedder) == 0
    no_user = write_jsonl(tmp_path / "nouser.jsonl", rows(None, 1))
    assert run("ingest", str(no_user)).exit_code == 2
    assert run("ingest", str(tmp_path / "missing.jsonl")).exit_code == 2
    assert run("ingest", str(tmp_path / "data.txt"), "--user", "x").exit_code == 2
    assert run("ingest", str(no_user), "--user", "has space").exit_code == 2
    assert run("ingest", str(LAMP / "lamp2n_questions.json"), "--format", "lamp").exit_code == 2  # no --task
    assert count(embedder) == 0
    assert run("compile", "--user", "nobody").exit_code == 2
    assert run("compile").exit_code == 2  # neither --user nor --all
    assert run("compile", "--user", "alice", "--n", "0").exit_code == 2
    assert run("compile", "--user", "alice", "--strategy", "magic").exit_code == 2
    assert run("ask", "--user", "nobody", "hi").exit_code == 2
    assert run("personas", "show", "--user", "nobody").exit_code == 2
    assert run("forget", "--user", "bad id", "--yes").exit_code == 2
    assert count(embedder) == 0


def test_compile_prints_the_estimate_first_then_ask_answers_with_the_new_persona(tmp_path, embedder):
    run("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows("alice") + rows("bob"))))
    result = run("compile", "--user", "alice", "--n", "2")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.index("Estimate") < out.index("Compiled") and "mlflow ui --backend-store-uri sqlite:///" in out
    assert "alice" in out and "v1" in out
    result = run("ask", "--user", "alice", "How are you?")
    assert result.exit_code == 0 and result.stdout.strip() == SHORT and "alice@v1" in result.stderr
    result = run("ask", "--user", "bob", "How are you?")
    assert result.exit_code == 0 and result.stdout.strip() != SHORT
    result = run("compile", "--all", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "bob" in result.stdout and "Compiled 2, failed 0" in result.stdout
    result = run("compile", "--all")  # every user compiled at their newest interaction: nothing to do
    assert result.exit_code == 0 and "Compiled 0, failed 0" in result.stdout


def test_profile_build_for_one_user_or_all(tmp_path, embedder):
    run("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows("alice") + rows("bob", 2))))
    result = run("profile", "build", "--user", "alice")
    assert result.exit_code == 0, result.output
    assert "alice v1: Likes brevity." in result.stdout
    result = run("profile", "build", "--all")
    assert result.exit_code == 0 and "alice v2" in result.stdout and "bob v1" in result.stdout
    assert run("profile", "build").exit_code == 2
    assert run("profile", "build", "--user", "nobody").exit_code == 2


def test_profile_build_all_reports_an_echoed_profile_and_builds_the_others(tmp_path, embedder, monkeypatch):
    def summary(call):  # alice's four records get the prompt handed back, every time; bob's two a profile
        four = call.inputs["records"].count("\n") == 3
        return {"profile": PROFILE_ECHO if four else "Asks short questions."}

    lm = ScriptedLM({"records, existing_profile, max_words -> profile": summary})
    monkeypatch.setattr(
        cli, "open_workspace", lambda settings, *, needs_lm: Workspace(settings, embedder=embedder, lm=lm)
    )
    run("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows("alice") + rows("bob", 2))))
    result = run("profile", "build", "--all")
    assert result.exit_code == 1
    assert "bob v1: Asks short questions." in result.stdout and "alice v" not in result.stdout
    assert "failed alice" in " ".join(result.stderr.split()) and "profile prompt's own text" in result.stderr
    with MemoryStore(Settings().resolved_db_path, embedder=embedder) as store:
        assert store.get_profile("alice") is None and store.get_profile("bob").version == 1


def test_personas_list_show_diff_promote_rollback(tmp_path, embedder):
    run("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows("alice"))))
    assert run("compile", "--user", "alice").exit_code == 0
    result = run("personas", "list")
    assert result.exit_code == 0 and "alice" in result.stdout and "v1" in result.stdout
    result = run("personas", "list", "--user", "alice")
    assert result.exit_code == 0 and "aligned" in result.stdout and "init" in result.stdout
    result = run("personas", "show", "--user", "alice")
    assert result.exit_code == 0 and result.stdout.strip() == CONCISE
    result = run("personas", "diff", "--user", "alice", "0", "1")
    assert result.exit_code == 0 and "--- alice@v0" in result.stdout and "+Wants very concise answers." in result.stdout
    result = run("personas", "rollback", "--user", "alice")
    assert result.exit_code == 0 and "v2 is live (revision 3" in result.stdout
    result = run("personas", "promote", "--user", "alice", "1", "--expected-revision", "3")
    assert result.exit_code == 0 and "v1 is live (revision 4" in result.stdout
    result = run("personas", "promote", "--user", "alice", "0", "--expected-revision", "3")  # stale: a conflict
    assert result.exit_code == 1 and "revision 4" in result.stderr
    assert run("personas", "promote", "--user", "alice", "9").exit_code == 2


def test_gepa_from_the_cli_on_a_labelled_task_holds_a_flagged_persona_back(tmp_path, embedder, monkeypatch):
    bare = "Act as a guide to museums and opera."
    monkeypatch.setattr(
        cli,
        "open_workspace",
        lambda settings, *, needs_lm: Workspace(settings, embedder=embedder, lm=museum_lm(bare) if needs_lm else None),
    )
    history = [{**r, "user_id": "alice", "created_at": r["created_at"].isoformat()} for r in opera_history()]
    run("ingest", str(write_jsonl(tmp_path / "a.jsonl", history)))
    result = run("compile", "--user", "alice", "--strategy", "gepa", "--max-lm-calls", "40")
    assert result.exit_code == 2 and "free-text task" in result.stderr and "TASK_SIGNATURE" in result.stderr
    assert "alice" not in run("personas", "list").stdout  # refused before any persona was made
    monkeypatch.setenv("PERSONA_AGENT_TASK_SIGNATURE", "NoSuchTask")
    assert run("personas", "list").exit_code == 2
    monkeypatch.setenv("PERSONA_AGENT_TASK_SIGNATURE", "CategorizeArticle")
    result = run("compile", "--user", "alice", "--strategy", "gepa", "--max-lm-calls", "40", "--no-constrain")
    assert result.exit_code == 0, result.output
    assert "persona_check" in result.stderr and "no headings" in result.stderr and "not made live" in result.stderr
    assert run("personas", "show", "--user", "alice").stdout.strip() != bare  # v0 still live
    assert run("personas", "show", "--user", "alice", "--version", "1").stdout.strip() == bare
    result = run("compile", "--user", "alice", "--strategy", "gepa", "--max-lm-calls", "40")  # constrained
    assert result.exit_code == 0 and "persona_check" not in result.stderr, result.output
    live = run("personas", "show", "--user", "alice").stdout
    assert f"## User profile\n{bare}" in live and "## Agent instructions" in live


def test_forget_asks_unless_yes_and_reports_counts(tmp_path, embedder):
    run("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows("alice") + rows("bob"))))
    assert run("compile", "--user", "alice").exit_code == 0
    result = run("forget", "--user", "alice", input="n\n")
    assert result.exit_code == 1 and count(embedder, "alice") == 4  # declined: nothing removed
    result = run("forget", "--user", "alice", "--yes")
    assert result.exit_code == 0, result.output
    assert "interactions" in result.stdout and "mlflow_runs" in result.stdout
    assert count(embedder, "alice") == 0 and count(embedder, "bob") == 4
    assert "alice" not in run("personas", "list").stdout


def test_token_needs_a_secret_and_names_its_user(monkeypatch):
    result = run("token", "--user", "alice")
    assert result.exit_code == 2 and "PERSONA_AGENT_API_KEY" in result.stderr
    monkeypatch.setenv("PERSONA_AGENT_API_KEY", "cli-admin-key-Vb3Nq8Zr5Lx1Tw6Hk9Pd2Mf")
    result = run("token", "--user", "alice", "--ttl", "60")
    assert result.exit_code == 0
    claims = verify_token(result.stdout.strip(), token_secret(Settings()))
    assert claims.user_id == "alice" and claims.expires_at - claims.issued_at == 60


def test_the_demo_command_is_still_there():
    result = run("demo", "--help")
    assert result.exit_code == 0 and "HuffPost" in result.stdout


def test_an_error_message_is_one_line_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # Rich's width: the terminal's, else 80 columns
    missing = tmp_path / ("a-long-folder-name-" * 6) / "interactions.jsonl"
    result = run("ingest", str(missing), "--user", "alice")
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert str(missing) in line and len(line) > 120


def test_personas_list_shows_the_run_of_every_version_the_initial_one_included(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert run("ingest", str(write_jsonl(tmp_path / "a.jsonl", rows("alice")))).exit_code == 0
    assert run("compile", "--user", "alice", "--n", "2").exit_code == 0
    result = run("personas", "list", "--user", "alice")
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines() if "│" in line]
    run_ids = {row[0]: row[-1] for row in cells if row and row[0] in ("v0", "v1")}
    assert set(run_ids) == {"v0", "v1"}, result.stdout
    assert all(len(i) == 8 for i in run_ids.values()) and run_ids["v0"] != run_ids["v1"], result.stdout


def test_a_database_another_process_holds_is_one_line_naming_it_and_exits_1(tmp_path):
    """The service holds the file while it runs (one DuckDB writer process): a command says so, not a traceback."""
    path = Settings().resolved_db_path
    path.parent.mkdir(parents=True, exist_ok=True)
    with held_by_another_process(path):
        data = str(write_jsonl(tmp_path / "a.jsonl", rows("alice")))
        for args in (["ingest", data], ["personas", "list", "--user", "alice"], ["forget", "--user", "alice", "-y"]):
            result = run(*args)
            assert result.exit_code == 1, result.output
            [line] = result.stderr.splitlines()
            assert str(path) in line and "another process" in line and "persona-agent serve" in line, line
