"""The README's quickstart, run verbatim with the scripted LM: the block is read from README.md, so the test fails when
the README drifts from what the CLI does (a line it cannot run fails too). The capped compile must yield v1."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persona_agent import cli
from persona_agent.workspace import Workspace
from tests.support import CONCISE, SHORT, scripted_lm

README = Path(__file__).parents[2] / "README.md"
HEREDOC = re.compile(r"^cat > (\S+) <<'(\w+)'$")


def quickstart() -> list[str]:
    """The lines of the first bash block under `## Quickstart`."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Quickstart") :]
    block = section[section.index("```bash\n") + len("```bash\n") :]
    return block[: block.index("```")].splitlines()


def words(line: str) -> list[str]:
    return [os.path.expandvars(w) for w in shlex.split(line, comments=True)]


def run_block(lines: list[str], cwd: Path, monkeypatch) -> dict[str, str]:
    """Run each line as the shell would; returns each persona-agent command's output by its first two words."""
    outputs, i = {}, 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if heredoc := HEREDOC.match(line):
            end = lines.index(heredoc.group(2), i)
            (cwd / heredoc.group(1)).write_text("\n".join(lines[i:end]) + "\n", encoding="utf-8")
            i = end + 1
        elif line.startswith("export "):
            name, value = words(line)[1].split("=", 1)
            monkeypatch.setenv(name, value)
        elif line.startswith("persona-agent "):
            result = CliRunner().invoke(cli.app, words(line)[1:])
            assert result.exit_code == 0, f"{line}\n{result.output}"
            outputs[" ".join(words(line)[1:3])] = result.stdout
        elif line.startswith("mlflow ui "):  # a server: check that it would find the runs
            uri = words(line)[words(line).index("--backend-store-uri") + 1]
            assert Path(uri.removeprefix("sqlite:///")).is_file(), uri
        else:
            pytest.fail(f"the README's quickstart has a line this test does not know how to run: {line!r}")
    return outputs


def test_the_readme_quickstart_runs_verbatim_and_the_capped_compile_yields_v1(
    tmp_path, monkeypatch, embedder, mlflow_template
):
    monkeypatch.setattr(
        cli,
        "open_workspace",
        lambda settings, *, needs_lm: Workspace(settings, embedder=embedder, lm=scripted_lm() if needs_lm else None),
    )
    monkeypatch.setenv("PWD", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    home = tmp_path / ".persona_agent"  # where the block's export puts it; a migrated MLflow database saves seconds
    home.mkdir()
    shutil.copy(mlflow_template, home / "mlflow.db")

    out = run_block(quickstart(), tmp_path, monkeypatch)

    assert os.environ["PERSONA_AGENT_HOME"] == str(home)
    compiled = out["compile --user"]
    assert "--max-lm-calls" in " ".join(quickstart())  # the README's compile is capped ...
    assert re.search(r"alice\s*│\s*1\*\s*│\s*7\s*│", compiled)  # ... planned: a batch of one, at most 7 calls
    assert "shrunk to fit --max-lm-calls" in compiled and "v1 (from v0)" in compiled  # ... and it learns
    assert "v1" in out["personas list"] and "aligned" in out["personas list"]
    diff = out["personas diff"]
    assert "+++ alice@v1" in diff and "+Wants very concise answers." in diff and CONCISE.startswith("## User profile")
    assert out["ask --user"].strip() == SHORT
