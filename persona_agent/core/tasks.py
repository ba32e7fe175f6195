"""The LaMP tasks we evaluate on: names, label sets, metric kind and how their files name things.

Label sets are exactly LaMP's: the official evaluation
(`LaMP-Benchmark/LaMP` `eval/evaluation.py`, and OPPU's `eval/evaluation.py` for the 2N/2M split)
compares a stripped output against these strings, case-sensitively.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.labels import LAMP_1_CHOICES, LAMP_2M_TAGS, LAMP_2N_CATEGORIES, LAMP_3_RATINGS


class MetricKind(StrEnum):
    """Which family of LaMP metrics scores a task."""

    CLASSIFICATION = "classification"  # accuracy, macro-F1 over the label set
    REGRESSION = "regression"  # MAE, RMSE on a 1..5 rating
    GENERATION = "generation"  # ROUGE-1, ROUGE-L


METRIC_NAMES: dict[MetricKind, tuple[str, ...]] = {
    # The keys LaMP's official evaluation returns, so our tables read like theirs.
    MetricKind.CLASSIFICATION: ("accuracy", "f1"),
    MetricKind.REGRESSION: ("MAE", "RMSE"),
    MetricKind.GENERATION: ("rouge-1", "rouge-L"),
}


class TaskSpec(BaseModel):
    """One LaMP task. `input_field`/`output_field` name the LaMP profile keys that map onto a record's input/output."""

    model_config = ConfigDict(frozen=True)

    name: str  # "LaMP-2N": what we print
    lamp_id: str  # "LaMP_2N": the `task` value of LaMP/OPPU outputs files
    oppu_name: str  # "news_categorize": OPPU's folder name for the task
    title: str
    labels: tuple[str, ...]  # empty for generation tasks
    metric_kind: MetricKind
    input_field: str
    output_field: str
    required_profile_fields: tuple[str, ...]
    question_marker: str | None  # LaMP questions put the content after this marker (None: keep the whole question)
    question_prefix: str | None  # our LaMP-style question text; the content follows it

    @property
    def metric_names(self) -> tuple[str, ...]:
        return METRIC_NAMES[self.metric_kind]

    @property
    def is_labelled(self) -> bool:
        """True when outputs must come from `labels` (classification and 1..5 ratings)."""
        return bool(self.labels)

    def format_question(self, content: str) -> str:
        """The LaMP-style question for `content` (the prompt a non-personalized LM would get)."""
        if self.question_prefix is None:
            return content
        return f"{self.question_prefix} {content}"

    def extract_content(self, question: str) -> str:
        """The content part of a LaMP question: the text after its marker, as LaMP's own retrievers take it."""
        if self.question_marker is None:
            return question.strip()
        at = question.find(self.question_marker)
        if at == -1:
            return question.strip()
        return question[at + len(self.question_marker) :].strip()


def _choices(labels: tuple[str, ...]) -> str:
    return "[" + ", ".join(labels) + "]"


# LaMP's label sets live in one place, shared with the task signatures.
NEWS_CATEGORIES = LAMP_2N_CATEGORIES
MOVIE_TAGS = LAMP_2M_TAGS
RATINGS = LAMP_3_RATINGS
CITATION_CHOICES = LAMP_1_CHOICES

LAMP_1 = TaskSpec(
    name="LaMP-1",
    lamp_id="LaMP_1",
    oppu_name="citation",
    title="personalized citation identification",
    labels=CITATION_CHOICES,
    metric_kind=MetricKind.CLASSIFICATION,
    input_field="title",
    output_field="abstract",
    required_profile_fields=("title",),
    question_marker=None,
    question_prefix=None,
)
LAMP_2N = TaskSpec(
    name="LaMP-2N",
    lamp_id="LaMP_2N",
    oppu_name="news_categorize",
    title="personalized news categorization",
    labels=NEWS_CATEGORIES,
    metric_kind=MetricKind.CLASSIFICATION,
    input_field="text",
    output_field="category",
    required_profile_fields=("text", "category"),
    question_marker="article:",
    question_prefix=(
        "Which category does this article belong to? Answer with exactly one category name from "
        f"{_choices(NEWS_CATEGORIES)} and nothing else. article:"
    ),
)
LAMP_2M = TaskSpec(
    name="LaMP-2M",
    lamp_id="LaMP_2M",
    oppu_name="movie_tagging",
    title="personalized movie tagging",
    labels=MOVIE_TAGS,
    metric_kind=MetricKind.CLASSIFICATION,
    input_field="description",
    output_field="tag",
    required_profile_fields=("description", "tag"),
    question_marker="description:",
    question_prefix=(
        f"Which tag fits this movie? Answer with exactly one tag from {_choices(MOVIE_TAGS)} and nothing else. "
        "description:"
    ),
)
LAMP_3 = TaskSpec(
    name="LaMP-3",
    lamp_id="LaMP_3",
    oppu_name="product_rating",
    title="personalized product rating",
    labels=RATINGS,
    metric_kind=MetricKind.REGRESSION,
    input_field="text",
    output_field="score",
    required_profile_fields=("text", "score"),
    question_marker="review:",
    question_prefix="What score from 1 to 5 did the author give with this review? Answer with 1, 2, 3, 4 or 5 only. review:",
)
LAMP_4 = TaskSpec(
    name="LaMP-4",
    lamp_id="LaMP_4",
    oppu_name="news_headline",
    title="personalized news headline generation",
    labels=(),
    metric_kind=MetricKind.GENERATION,
    input_field="text",
    output_field="title",
    required_profile_fields=("text", "title"),
    question_marker="article:",
    question_prefix="Write a headline for this article:",
)

TASKS: dict[str, TaskSpec] = {t.name: t for t in (LAMP_1, LAMP_2N, LAMP_2M, LAMP_3, LAMP_4)}


def _key(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-").removeprefix("lamp-")


_ALIASES: dict[str, TaskSpec] = {}
for _t in TASKS.values():
    for _alias in (_t.name, _t.lamp_id, _t.oppu_name):
        _ALIASES[_key(_alias)] = _t


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Look a task up by any of its names: "LaMP-2N", "LaMP_2N", "2N", or OPPU's "news_categorize"."""
    if isinstance(name, TaskSpec):
        return name
    task = _ALIASES.get(_key(str(name)))
    if task is None:
        hint = " (LaMP-2 is ambiguous: say LaMP-2N for news or LaMP-2M for movies)" if _key(str(name)) == "2" else ""
        raise InvalidInputError("task", name, f"unknown task; known: {', '.join(TASKS)}{hint}")
    return task
