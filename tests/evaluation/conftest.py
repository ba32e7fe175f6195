"""One full scripted run of every method on the hand-written users, shared by the runner and report tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from persona_agent.testing import ScriptedLM

from .runner_fixtures import WordsEmbedder, news_dataset, news_lm

# Small enough for seconds, large enough to align; one simulation thread, so where a budget cuts is deterministic.
FAST = {"k": 2, "max_iters": 2, "align_budget": 24, "align_threads": 1}


@dataclass(frozen=True)
class FullRun:
    out: Path
    lm: ScriptedLM
    result: object


def run_all(out: Path, lm: ScriptedLM | None = None, workers: int | None = None, **kwargs):
    from persona_agent.evaluation.runner import RunConfig, run_evaluation

    lm = lm or news_lm()
    config = RunConfig(
        task="lamp2n", users=5, queries=3, methods="all", lm="scripted/lm", out=out, workers=workers, **FAST
    )
    result = run_evaluation(config, dataset=news_dataset(), lm=lm, embedder=WordsEmbedder(), progress=False, **kwargs)
    return lm, result


@pytest.fixture(scope="session")
def full_run(tmp_path_factory) -> FullRun:
    out = tmp_path_factory.mktemp("full-run")
    lm, result = run_all(out)
    return FullRun(out=out, lm=lm, result=result)
