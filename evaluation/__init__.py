"""Evaluation on per-user data: LaMP task definitions, records, loaders, builders from public data, metrics.

- `tasks`: LaMP-1, 2N, 2M, 3, 4 with their label sets and metric kinds.
- `records`: `Item`, `EvalUser` (history + latest queries; `profile_before`, `alignment_batch`),
  `BuildReport`, `EvalDataset`.
- `loaders`: LaMP's official question/output files and OPPU's per-user files (and a LaMP writer).
- `huffpost`, `movielens`, `amazon`: builders from the real data (the folder given, else the `data_dir` setting;
  its SOURCES.md says where each file comes from), each a `builders.LampBuilder` around its own reading.
- `metrics`, `intervals`: LaMP's official metrics and seeded bootstrap intervals.

The runner is imported from its modules, not re-exported here (it loads DSPy and the models' stack):
- `plan`: task set-ups, the compared methods (baselines, ablations, alignment strategies, no-LM floors)
  and the paper's figures; `floors`: the no-LM floors; `moviekb`: the LaMP-2M knowledge base.
- `runner`: `RunConfig`, `run_evaluation` (resumable: `persist`'s results log and per-user state cache);
  per user `user_run.UserRun` answers, on `user_setup` (memory, profile, personas) and `run_state` (shared).
- `report`: results JSON, Markdown table and PNG chart from a run's log, with `head_to_head` (PersonaAgent
  against each method, query by query) and `alignment_effect` (what each alignment strategy changed);
  `cli`: `persona-agent eval`.
"""

from persona_agent.core.lamp import load_lamp, load_oppu, to_lamp, write_lamp
from persona_agent.core.records import BuildReport, EvalDataset, EvalUser, Item
from persona_agent.core.tasks import (
    LAMP_1,
    LAMP_2M,
    LAMP_2N,
    LAMP_3,
    LAMP_4,
    TASKS,
    MetricKind,
    TaskSpec,
    get_task,
)
from persona_agent.evaluation.amazon import build_amazon_ratings
from persona_agent.evaluation.builders import data_path, slugify_user_id
from persona_agent.evaluation.huffpost import CATEGORY_MAP, build_huffpost_categories, build_huffpost_headlines
from persona_agent.evaluation.intervals import Interval, bootstrap_interval, bootstrap_mean_interval
from persona_agent.evaluation.metrics import (
    accuracy,
    label_index,
    lower_is_better,
    macro_f1,
    mae,
    metric_function,
    normalize_output,
    rating_value,
    rmse,
    rouge_1,
    rouge_l,
    rouge_per_example,
    score,
)
from persona_agent.evaluation.movielens import TAG_SYNONYMS, build_movielens_tags, map_tag

__all__ = [
    "CATEGORY_MAP",
    "LAMP_1",
    "LAMP_2M",
    "LAMP_2N",
    "LAMP_3",
    "LAMP_4",
    "TAG_SYNONYMS",
    "TASKS",
    "BuildReport",
    "EvalDataset",
    "EvalUser",
    "Interval",
    "Item",
    "MetricKind",
    "TaskSpec",
    "accuracy",
    "bootstrap_interval",
    "bootstrap_mean_interval",
    "build_amazon_ratings",
    "build_huffpost_categories",
    "build_huffpost_headlines",
    "build_movielens_tags",
    "data_path",
    "get_task",
    "label_index",
    "load_lamp",
    "load_oppu",
    "lower_is_better",
    "macro_f1",
    "mae",
    "map_tag",
    "metric_function",
    "normalize_output",
    "rating_value",
    "rmse",
    "rouge_1",
    "rouge_l",
    "rouge_per_example",
    "score",
    "slugify_user_id",
    "to_lamp",
    "write_lamp",
]
