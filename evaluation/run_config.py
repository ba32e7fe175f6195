"""What defines an evaluation run: `RunConfig` (its folder, its identity for resuming, the command that
reproduces it) and the seeded user sample."""

from __future__ import annotations

import os
import random
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.records import EvalDataset, EvalUser
from persona_agent.evaluation.plan import FORMAT, TaskSetup, available_methods, parse_methods, task_setup

DEFAULT_OUT = Path("benchmarks/results/eval")


def sample_users(dataset: EvalDataset, n: int, seed: int) -> list[EvalUser]:
    """`n` users drawn with `seed` from the dataset's users (all of them if it has fewer), sorted by id."""
    users = sorted(dataset.users, key=lambda u: u.user_id)
    chosen = random.Random(seed).sample(users, min(n, len(users)))
    return sorted(chosen, key=lambda u: u.user_id)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "lm"


def _portable(path: Path) -> str:
    """`path` as it reads from the working directory: a committed run's files name no machine's folders."""
    if not path.is_absolute():
        return str(path)
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows): no relative form
        return str(path)


def _positive(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(name, value, f"must be an integer >= {minimum}")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. `identity()` is what must match to resume into the same folder."""

    task: str
    users: int = 20
    queries: int = 3
    methods: str | Sequence[str] = "all"
    lm: str = "local"
    seed: int = 0
    out: Path = DEFAULT_OUT
    data: Path | None = None  # default: the data_dir setting
    run_name: str | None = None
    k: int = 4
    max_iters: int = 3
    align_n: int = 3
    align_iterations: int = 1
    align_budget: int = 60
    profile_records: int = 40
    workers: int | None = None
    align_threads: int | None = None
    lm_cache: bool = False
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        setup = task_setup(self.task)
        object.__setattr__(self, "task", setup.task.name)
        object.__setattr__(self, "methods", parse_methods(self.methods, setup.task))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "data", None if self.data is None else Path(self.data))
        for name in ("users", "queries", "k", "max_iters", "align_n", "align_iterations", "profile_records"):
            _positive(name, getattr(self, name))
        _positive("align_budget", self.align_budget, 4)
        _positive("seed", self.seed, 0)
        for name in ("workers", "align_threads"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.run_name is not None and (not self.run_name.strip() or "/" in self.run_name):
            raise InvalidInputError("run_name", self.run_name, "must be a non-empty folder name")

    @property
    def setup(self) -> TaskSetup:
        return task_setup(self.task)

    @property
    def name(self) -> str:
        return self.run_name or f"{_slug(self.lm)}-{self.users}u-{self.queries}q-seed{self.seed}"

    @property
    def run_dir(self) -> Path:
        return self.out / self.setup.slug / self.name

    def identity(self) -> dict[str, Any]:
        """The settings results depend on (not: methods, which may grow on resume, workers, paths, caching)."""
        keep = ("task", "users", "queries", "lm", "seed", "k", "max_iters", "align_n", "align_iterations")
        return {
            "format": FORMAT,
            **{k: getattr(self, k) for k in keep},
            "align_budget": self.align_budget,
            "profile_records": self.profile_records,
        }

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {
            k: (_portable(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in out.items()
        }

    def command(self, methods: Sequence[str] | None = None) -> str:
        """The `persona-agent eval run` command that reproduces this run (every result-defining option explicit)."""
        chosen = tuple(methods) if methods is not None else tuple(self.methods)
        all_methods = available_methods(self.setup.task)
        method_arg = "all" if set(all_methods) <= set(chosen) else ",".join(m for m in all_methods if m in chosen)
        args = [
            ("--task", self.setup.slug),
            ("--users", self.users),
            ("--queries", self.queries),
            ("--methods", method_arg),
            ("--lm", self.lm),
            ("--seed", self.seed),
            ("--k", self.k),
            ("--max-iters", self.max_iters),
            ("--align-n", self.align_n),
            ("--align-iterations", self.align_iterations),
            ("--align-budget", self.align_budget),
            ("--profile-records", self.profile_records),
            ("--out", self.out),
        ]
        if self.data is not None:
            args.append(("--data", self.data))
        if self.run_name is not None:
            args.append(("--run-name", self.run_name))
        text = " ".join(
            f"{flag} {shlex.quote(_portable(value) if isinstance(value, Path) else str(value))}" for flag, value in args
        )
        return f"persona-agent eval run {text}" + (" --lm-cache" if self.lm_cache else "")
