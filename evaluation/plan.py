"""What an evaluation run compares: each task's set-up and the methods, with the paper's figures beside them.

A task set-up ties a LaMP task to the DSPy signature every method answers with, the builder that makes
its users from the real data, and whether it has a knowledge source (LaMP-2M: the movie database,
standing in for the paper's Wikipedia).

Methods are the paper's comparison set (`programs.METHODS`), PersonaAgent under each alignment strategy,
and the no-LM floors every table shows (on HuffPost authors they are strong: an LLM method that does not
beat them has not personalized anything):
- `majority`: the user's most frequent label in their memory (ties: the most recent), or for LaMP-3
  their mean rating (scored as is for MAE/RMSE, rounded for the rounded-accuracy column);
- `nearest`: the label of the memory item most similar to the query by embedding;
- `median` (LaMP-3 only): the user's median rating, a whole star, the constant with the least absolute error
  on their past ratings.
The paper's ablations are `no_persona`, `no_memory`, `no_action` (all three but `no_persona` with the
PersonaAligner persona, like the full agent) and `no_alignment` (the full agent with the initial persona).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import dspy

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.records import EvalDataset
from persona_agent.core.tasks import LAMP_2M, LAMP_2N, LAMP_3, LAMP_4, TASKS, MetricKind, TaskSpec, get_task
from persona_agent.evaluation.amazon import build_amazon_ratings
from persona_agent.evaluation.huffpost import build_huffpost_categories, build_huffpost_headlines
from persona_agent.evaluation.metrics import rating_value, rouge_per_example
from persona_agent.evaluation.movielens import build_movielens_tags
from persona_agent.evaluation.persist import LOG_FORMAT
from persona_agent.optimizers.metrics import exact_match
from persona_agent.signatures.tasks import CategorizeArticle, GenerateHeadline, RateReview, TagMovie

Builder = Callable[..., EvalDataset]
FORMAT = LOG_FORMAT  # results log and results file format


@dataclass(frozen=True)
class TaskSetup:
    """One task as the runner runs it. `slug` names its results folder and its CLI value."""

    task: TaskSpec
    slug: str
    signature: type[dspy.Signature]
    build: Builder
    knowledge: bool = False

    @property
    def input_field(self) -> str:
        return next(iter(self.signature.input_fields))

    @property
    def output_field(self) -> str:
        return next(iter(self.signature.output_fields))


SETUPS: dict[str, TaskSetup] = {
    s.task.name: s
    for s in (
        TaskSetup(LAMP_2N, "lamp2n", CategorizeArticle, build_huffpost_categories),
        TaskSetup(LAMP_2M, "lamp2m", TagMovie, build_movielens_tags, knowledge=True),
        TaskSetup(LAMP_3, "lamp3", RateReview, build_amazon_ratings),
        TaskSetup(LAMP_4, "lamp4", GenerateHeadline, build_huffpost_headlines),
    )
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower()).removeprefix("lamp")


def task_setup(name: str | TaskSpec) -> TaskSetup:
    """The set-up of a task by any name: "lamp2n", "LaMP-2N", "2N", "news_categorize"."""
    task = None
    if isinstance(name, str):
        key = _squash(name)
        task = next((t for t in TASKS.values() if key in {_squash(t.name), _squash(t.lamp_id), t.oppu_name}), None)
    task = task or get_task(name)
    if task.name not in SETUPS:
        raise InvalidInputError("task", name, f"no real-data set-up for {task.name}; choose from {list(SETUPS)}")
    return SETUPS[task.name]


PersonaSource = Literal["none", "initial", "aligned"]
Group = Literal["floor", "baseline", "ablation", "persona_agent"]


@dataclass(frozen=True)
class MethodSpec:
    """One row of the results table.

    `program` is the `make_method` name (None for floors); `persona` says which persona it runs under
    (`aligned` by `strategy`); `uses_profile` marks methods that read the semantic-memory profile.
    """

    name: str
    label: str
    group: Group
    program: str | None = None
    persona: PersonaSource = "none"
    strategy: str | None = None
    uses_profile: bool = False
    mode: Literal["react", "planned"] = "react"

    @property
    def alignment_key(self) -> str:
        """The cached alignment this method runs under: a strategy, per agent mode (a planned agent is
        aligned as it answers, one call per simulated answer, and keeps an update only if it helps)."""
        strategy = self.strategy or "persona_aligner"
        return f"{strategy}:planned" if self.mode == "planned" else strategy

    @property
    def unaligned(self) -> str:
        """The method that is this one without its compiled persona (the alignment effect's baseline)."""
        return "planned_no_alignment" if self.mode == "planned" else "no_alignment"

    @property
    def is_floor(self) -> bool:
        """No program: computed from the data alone (the fitted vote is a program that calls no LM)."""
        return self.program is None

    @property
    def needs_profile(self) -> bool:
        return self.uses_profile or self.persona != "none"

    @property
    def needs_memory(self) -> bool:
        """Everything but the majority and median floors and the non-personalized LM reads the user's memory store."""
        return self.name not in ("majority", "median", "non_personalized")

    @property
    def uses_tools(self) -> bool:
        """Runs the tool loop, so a knowledge base (when the task has one) is offered to it."""
        return self.program in ("react", "persona_agent", "no_persona", "no_memory")


METHOD_SPECS: tuple[MethodSpec, ...] = (
    MethodSpec("majority", "user majority label (floor)", "floor"),
    MethodSpec("nearest", "nearest profile item (floor)", "floor"),
    MethodSpec("median", "user median rating (floor)", "floor"),
    MethodSpec("vote", "fitted neighbour vote (floor, no LM)", "floor", "planned_no_persona", mode="planned"),
    MethodSpec("non_personalized", "non-personalized LM", "baseline", "non_personalized"),
    MethodSpec("icl", "ICL (latest k)", "baseline", "icl"),
    MethodSpec("rag", "RAG (top-k)", "baseline", "rag"),
    MethodSpec("pag", "PAG (profile + top-k)", "baseline", "pag", uses_profile=True),
    MethodSpec("membank", "MemBank", "baseline", "membank", uses_profile=True),
    MethodSpec("react", "ReAct", "baseline", "react", uses_profile=True),
    MethodSpec("no_persona", "w/o persona", "ablation", "no_persona", uses_profile=True),
    MethodSpec("no_memory", "w/o memory", "ablation", "no_memory", "aligned", "persona_aligner"),
    MethodSpec("no_action", "w/o action", "ablation", "no_action", "aligned", "persona_aligner"),
    MethodSpec("no_alignment", "w/o alignment", "ablation", "persona_agent", "initial"),
    MethodSpec("persona_agent", "PersonaAgent", "persona_agent", "persona_agent", "aligned", "persona_aligner"),
    MethodSpec("persona_agent+gepa", "PersonaAgent + GEPA", "persona_agent", "persona_agent", "aligned", "gepa"),
    MethodSpec("persona_agent+copro", "PersonaAgent + COPRO", "persona_agent", "persona_agent", "aligned", "copro"),
    # Planned mode (one answer call, memory as demos, scored labels, fitted evidence weights) and its rows
    MethodSpec("planned_no_persona", "planned w/o persona", "ablation", "planned_no_persona", mode="planned"),
    MethodSpec(
        "planned_no_memory",
        "planned w/o memory",
        "ablation",
        "planned_no_memory",
        "aligned",
        "persona_aligner",
        mode="planned",
    ),
    MethodSpec("planned_no_alignment", "planned w/o alignment", "ablation", "planned", "initial", mode="planned"),
    MethodSpec(
        "planned", "PersonaAgent planned", "persona_agent", "planned", "aligned", "persona_aligner", mode="planned"
    ),
)
METHODS_BY_NAME: dict[str, MethodSpec] = {m.name: m for m in METHOD_SPECS}
GROUPS: dict[str, tuple[str, ...]] = {
    "floors": ("majority", "nearest", "median"),
    "baselines": tuple(m.name for m in METHOD_SPECS if m.group == "baseline"),
    "ablations": tuple(m.name for m in METHOD_SPECS if m.group == "ablation"),
    "strategies": tuple(m.name for m in METHOD_SPECS if m.group == "persona_agent"),
    "planned_mode": tuple(m.name for m in METHOD_SPECS if m.mode == "planned"),  # the vote floor too
}


def method_label(spec: MethodSpec, task: TaskSpec) -> str:
    if spec.name == "majority" and task.metric_kind is MetricKind.REGRESSION:
        return "user mean rating (floor)"
    return spec.label


def available_methods(task: TaskSpec) -> tuple[str, ...]:
    """Every method that is defined for `task` (a majority headline is not; a median is only for ratings)."""
    undefined = {
        "majority": task.metric_kind is MetricKind.GENERATION,
        "median": task.metric_kind is not MetricKind.REGRESSION,
        "vote": task.metric_kind is MetricKind.GENERATION,
    }
    return tuple(m.name for m in METHOD_SPECS if not undefined.get(m.name, False))


def parse_methods(value: str | Sequence[str], task: TaskSpec) -> tuple[str, ...]:
    """Method names (or "all" / a group name), comma-separated or a list, in table order, without repeats."""
    parts = [p.strip() for p in (value.split(",") if isinstance(value, str) else value) if p.strip()]
    if not parts:
        raise InvalidInputError("methods", value, "name at least one method, a group or 'all'")
    allowed = available_methods(task)
    wanted: set[str] = set()
    for part in parts:
        if part == "all":
            wanted.update(allowed)
        elif part in GROUPS:
            wanted.update(n for n in GROUPS[part] if n in allowed)
        elif part in allowed:
            wanted.add(part)
        else:
            choices = ", ".join(["all", *GROUPS, *allowed])
            raise InvalidInputError("methods", part, f"unknown for {task.name}; choose from {choices}")
    return tuple(m.name for m in METHOD_SPECS if m.name in wanted)


# Zhang et al. (arXiv 2506.06254), Claude-3.5 Sonnet on LaMP's own data, 100 users with the longest
# histories: printed beside our numbers for reference, not as a like-for-like comparison.
PAPER: dict[str, dict[str, dict[str, float]]] = {
    "LaMP-2N": {
        "persona_agent": {"accuracy": 0.796, "f1": 0.532},
        "non_personalized": {"accuracy": 0.660},
        "react": {"accuracy": 0.639},
        "membank": {"accuracy": 0.741},
        "pag": {"accuracy": 0.768},
        "no_alignment": {"accuracy": 0.775},
    },
    "LaMP-2M": {
        "persona_agent": {"accuracy": 0.513, "f1": 0.424},
        "non_personalized": {"accuracy": 0.387},
        "react": {"accuracy": 0.450},
        "membank": {"accuracy": 0.470},
        "no_alignment": {"accuracy": 0.487},
    },
    "LaMP-3": {
        "persona_agent": {"MAE": 0.241, "RMSE": 0.509},
        "non_personalized": {"MAE": 0.295},
        "icl": {"MAE": 0.277},
        "no_alignment": {"MAE": 0.259},
    },
}


def paper_figures(task: TaskSpec, method: str) -> dict[str, float]:
    return dict(PAPER.get(task.name, {}).get(method, {}))


def alignment_metric(task: TaskSpec) -> Callable[..., float]:
    """The metric an alignment strategy optimizes, in DSPy's `metric(example, prediction, trace=None)` form.

    Labels: exact match. Ratings: 1 - |error| / 4, so a near miss is better than a far one (the aligner
    treats only a perfect score as a match). Headlines: ROUGE-L F-measure.
    """
    field = task_setup(task).output_field
    if task.metric_kind is MetricKind.CLASSIFICATION:
        return exact_match

    if task.metric_kind is MetricKind.REGRESSION:

        def rating_closeness(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
            gold = float(example[field])
            return 1.0 - min(4.0, abs(rating_value(prediction.get(field, ""), gold) - gold)) / 4.0

        return rating_closeness

    def rouge_l_f(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
        return rouge_per_example([str(prediction.get(field, ""))], [str(example[field])])[0][1]

    return rouge_l_f
