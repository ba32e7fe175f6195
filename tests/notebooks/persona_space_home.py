"""A small home for notebooks/02_persona_space.ipynb without the real LM: the shipped demo sample, every user's
profile and compiled persona, written by a scripted LM whose replies follow each user's own labels.

The scripted profile names the two labels a user gives most in the records it is shown; the simulated agent
files everything under `science & technology` unless its persona names the story's label; the loss compares
labels; the gradient and the edit turn the mismatches into "Files such stories under <label>." lines. So the
personas carry what the data says, but in the scripted LM's words: a stand-in for a real run's figure.

    python -m tests.notebooks.persona_space_home DIR   # builds DIR (removed first if the demo made it)
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

from persona_agent.compiling import CompileOptions, compile_user
from persona_agent.demo import DEMO_SPEC, demo_settings, fresh_home, sample_path
from persona_agent.ingest import read_records
from persona_agent.programs.profile import ProfileBuilder
from persona_agent.stores.embeddings import Embedder
from persona_agent.testing import ScriptedLM
from persona_agent.workspace import Workspace

GENERIC = "science & technology"
WANTED = re.compile(r"user wanted: (.+)")
NAMED = re.compile(r"Files such stories under (.+)\.\s*$", re.M)


def _profile(call) -> dict:
    labels = Counter(line.rsplit(" -> ", 1)[-1].strip() for line in call.inputs["records"].splitlines())
    top = [label for label, _ in labels.most_common(2)]
    return {"profile": f"Labels most stories: {', '.join(top)}."}


def _category(call) -> dict:
    named = NAMED.findall(call.messages[0]["content"])
    return {"category": named[-1] if named else GENERIC}


def _gradient(call) -> dict:
    wanted = sorted(set(WANTED.findall(call.inputs["losses"])))
    return {"gradient": "\n".join(f"- the user files such stories under {w}" for w in wanted)}


def _edit(call) -> dict:
    labels = re.findall(r"under (.+)$", call.inputs["gradient"], flags=re.M)
    return {"add": [f"Files such stories under {label.strip()}." for label in labels], "remove": []}


def space_lm() -> ScriptedLM:
    def loss(call):
        same = call.inputs["simulated_response"].strip() == call.inputs["ground_truth_response"].strip()
        return {
            "matches": same,
            "critique": "" if same else f"The user files this under {call.inputs['ground_truth_response']}.",
        }

    return ScriptedLM(
        {
            "records, existing_profile, max_words -> profile": _profile,
            # with memory tools (the CLI's program), the tool loop finishes at once
            "article, trajectory -> next_thought, next_tool_name, next_tool_args": {
                "next_thought": "enough",
                "next_tool_name": "finish",
                "next_tool_args": {},
            },
            "article, trajectory -> category": _category,
            "article -> category": _category,  # planned mode's one call
            "persona, request, simulated_response, ground_truth_response -> matches, critique": loss,
            "persona, losses -> gradient": _gradient,
            "persona, gradient -> add, remove": _edit,
        }
    )


def build_home(root: Path, *, embedder: Embedder | None = None, mlflow_db: Path | None = None) -> Path:
    """Ingest the sample into a fresh home under `root`, then profile and compile every user; the home."""
    home = fresh_home(root)
    if mlflow_db is not None:  # a migrated, empty MLflow database (tests): migrating takes seconds
        (home / "mlflow.db").write_bytes(mlflow_db.read_bytes())
    settings = demo_settings(home)
    with Workspace(settings, embedder=embedder, lm=space_lm(), spec=DEMO_SPEC) as ws:
        ws.store.ingest(read_records(sample_path(), max_chars=settings.max_text_chars))
        for user in ws.store.users():
            with ws.lm_context():
                ProfileBuilder().build(ws.store, user)
            ws.ensure_persona(user)
            compile_user(ws, user, CompileOptions(n=3, max_lm_calls=10, update="edit"))
    return home


if __name__ == "__main__":
    print(build_home(Path(sys.argv[1])))
