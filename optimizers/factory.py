"""Compile strategies by name, and the one mapping from compile options to a strategy's arguments (used by
the CLI and service compile, the evaluation, and the alignment benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from dspy.teleprompt import Teleprompter

from persona_agent.core.errors import InvalidInputError
from persona_agent.optimizers.copro import COPROPersonaOptimizer
from persona_agent.optimizers.gepa import MAX_LM_CALLS as GEPA_MAX_LM_CALLS
from persona_agent.optimizers.gepa import GEPAPersonaOptimizer
from persona_agent.optimizers.persona_aligner import PersonaAligner
from persona_agent.optimizers.simulation import Metric

Strategy = Literal["persona_aligner", "gepa", "copro"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
_CLASSES = dict(zip(STRATEGIES, (PersonaAligner, GEPAPersonaOptimizer, COPROPersonaOptimizer), strict=True))


def make_optimizer(strategy: str, **options: Any) -> Teleprompter:
    """A compile strategy by name: "persona_aligner" (the paper's), "gepa" or "copro"."""
    if strategy not in _CLASSES:
        raise InvalidInputError("strategy", strategy, f"choose from {list(STRATEGIES)}")
    return _CLASSES[strategy](**options)


def optimizer_for(
    strategy: str,
    *,
    n: int = 3,
    iterations: int = 1,
    accept: Literal["always", "improve"] = "always",
    update: Literal["rewrite", "edit"] = "rewrite",
    metric: Metric | None = None,
    max_lm_calls: int | None = None,
    max_tokens: int | None = None,
    max_seconds: float | None = None,
    num_threads: int | None = None,
    constrain: bool = True,
    seed: int = 0,
    log_dir: str | Path | None = None,
    breadth: int | None = None,
    depth: int | None = None,
) -> Teleprompter:
    """The strategy under these options; each strategy takes the ones it has and ignores the rest.

    - all: the batch size `n`, the `metric`, the budget, `num_threads` (None: the strategy's default).
    - persona_aligner: `iterations`, `accept`, `update`.
    - gepa: `constrain`, `seed`, `log_dir`; without `max_lm_calls`, `GEPA_MAX_LM_CALLS`.
    - copro: `constrain`, `breadth` (None: COPRO's default), `depth` (None: `iterations`, the rounds).
    """
    common: dict[str, Any] = {
        "metric": metric,
        "n": n,
        "max_lm_calls": max_lm_calls,
        "max_tokens": max_tokens,
        "max_seconds": max_seconds,
    }
    if num_threads is not None:
        common["num_threads"] = num_threads
    if strategy == "persona_aligner":
        return make_optimizer(strategy, iterations=iterations, accept=accept, update=update, **common)
    if strategy == "gepa":
        common["max_lm_calls"] = max_lm_calls or GEPA_MAX_LM_CALLS
        return make_optimizer(strategy, constrain=constrain, seed=seed, log_dir=log_dir, **common)
    if breadth is not None:
        common["breadth"] = breadth
    return make_optimizer(strategy, depth=iterations if depth is None else depth, constrain=constrain, **common)
