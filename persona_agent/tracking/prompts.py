"""Personas in MLflow's prompt registry: each persona version is also a version of the prompt `persona.<user>`.

The prompt's template is the persona text; its version tags say where it came from (user, persona version,
parent, source, strategy, the run id, scores, the small-LM guard's check), and the alias `live` points at the
user's live version, so `prompts:/persona.alice@live` is the persona answering for alice now (and
`persona_agent.load_program("alice", "prompts:/persona.alice@live")` the whole program, from the version's run).

MLflow's UI loads every version of an entity, so a prompt keeps at most `keep` versions (the setting
`mlflow_prompt_versions`): the oldest beyond are deleted, never the live one; a version promoted after its
prompt version was deleted is registered again. DuckDB's registry stays the source of truth.

Only `MlflowClient` prompt calls that touch no global MLflow state are used (`create_prompt`,
`create_prompt_version`, aliases; not `register_prompt`/`load_prompt`, which link the active experiment).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from persona_agent.core.errors import InvalidInputError, TrackingError
from persona_agent.stores.personas import PersonaRecord
from persona_agent.tracking.names import prompt_name

LIVE = "live"
SCHEME = "prompts:/"


def is_prompt_ref(ref: object) -> bool:
    return isinstance(ref, str) and ref.startswith(SCHEME)


class PersonaPrompts:
    """The prompt versions of users' personas, through one `MlflowClient`, at most `keep` per user."""

    def __init__(self, client: Any, keep: int) -> None:
        self.client = client
        self.keep = keep
        # What this process registered, so a compile's commit does not look it up again (each prompt call is
        # several registry queries): prompts known to exist, and per prompt the newest (persona version,
        # prompt version) added. Both are dropped when a call finds them stale and on `forget`.
        self._lock = threading.Lock()
        self._exists: set[str] = set()
        self._added: dict[str, tuple[int, str]] = {}

    def add(self, record: PersonaRecord, *, check: str | None = None) -> str:
        """A new prompt version for this persona version (the prompt is made on its first version); returns its
        number. The oldest versions beyond `keep` are then deleted, except the live one."""
        from mlflow.exceptions import MlflowException

        name = prompt_name(record.user_id)
        tags = _tags(record, check)
        description = f"{record.source} v{record.version}" + ("" if record.parent is None else f" of v{record.parent}")
        with _mlflow_errors(f"cannot register the prompt {name}"):
            if name not in self._exists and self.client.get_prompt(name) is None:
                self.client.create_prompt(
                    name, description=f"persona of {record.user_id}", tags={"user_id": record.user_id}
                )
            try:
                version = self.client.create_prompt_version(name, record.text, description=description, tags=tags)
            except MlflowException:
                if name not in self._exists:
                    raise
                self._forget_memo(name)  # deleted behind this process's back: make it again
                return self.add(record, check=check)
            version = str(version.version)
            with self._lock:
                self._exists.add(name)
                self._added[name] = (record.version, version)
            if int(version) > self.keep:  # numbers only grow: at most `keep` versions exist until then
                self._prune(name)
        return version

    def set_live(self, record: PersonaRecord) -> str:
        """Point `persona.<user>@live` at this persona version, registering it first when it has no prompt version
        (never registered, or deleted by retention); returns the prompt version."""
        from mlflow.exceptions import MlflowException

        name = prompt_name(record.user_id)
        added = self._added.get(name)
        if added is not None and added[0] == record.version:  # just registered by this process: no lookup
            try:
                self.client.set_prompt_alias(name, LIVE, int(added[1]))
                return added[1]
            except MlflowException:
                self._forget_memo(name)  # changed behind this process's back: look it up
        current = self._aliased(name)
        if current is not None and current.tags.get("persona_version") == str(record.version):
            return str(current.version)
        version = self.version_of(record) or self.add(record)
        with _mlflow_errors(f"cannot move {name}@{LIVE}"):
            self.client.set_prompt_alias(name, LIVE, int(version))
        return version

    def version_of(self, record: PersonaRecord) -> str | None:
        """The newest prompt version of this persona version, if any is kept."""
        wanted = str(record.version)
        found = [v for v in self._versions(prompt_name(record.user_id)) if v.tags.get("persona_version") == wanted]
        return str(max(int(v.version) for v in found)) if found else None

    def run_of(self, ref: str) -> str:
        """The run id a `prompts:/<name>@<alias>` or `prompts:/<name>/<version>` reference was registered with."""
        rest = ref[len(SCHEME) :].strip("/")
        if "@" in rest:
            name, selector = rest.split("@", 1)
        elif "/" in rest:
            name, selector = rest.rsplit("/", 1)
        else:
            raise InvalidInputError("version", ref, "a prompts URI is prompts:/<name>@<alias> or /<version>")
        with _mlflow_errors(f"no prompt version for {ref}"):
            found = (
                self.client.get_prompt_version_by_alias(name, selector)
                if "@" in rest
                else self.client.get_prompt_version(name, selector)
            )
        run_id = found.tags.get("run_id") if found is not None else None
        if not run_id:
            raise TrackingError(f"{ref} names no prompt version with a run")
        return run_id

    def forget(self, user_id: str) -> int:
        """Delete the user's prompt with every version; returns how many versions there were."""
        name = prompt_name(user_id)
        self._forget_memo(name)
        with _mlflow_errors(f"cannot delete the prompt {name}"):
            if self.client.get_prompt(name) is None:
                return 0
            count = sum(1 for _ in self._versions(name))
            self.client.delete_prompt(name)
        return count

    # -- helpers ------------------------------------------------------------------------------------

    def _forget_memo(self, name: str) -> None:
        with self._lock:
            self._exists.discard(name)
            self._added.pop(name, None)

    def _aliased(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_prompt_version_by_alias(name, LIVE)
        except MlflowException:
            return None  # no prompt yet, or no live alias yet

    def _versions(self, name: str) -> Iterator[Any]:
        """The prompt's versions; none when MLflow has no such prompt (never registered, or deleted there)."""
        from mlflow.exceptions import MlflowException

        token = None
        while True:
            try:
                page = self.client.search_prompt_versions(name, max_results=1000, page_token=token)
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return
                raise TrackingError(f"cannot list the versions of {name}: {exc}") from exc
            yield from page
            token = page.token
            if not token:
                return

    def _prune(self, name: str) -> None:
        live = self._aliased(name)
        numbers = sorted((int(v.version) for v in self._versions(name)), reverse=True)
        for number in numbers[self.keep :]:
            if live is None or number != int(live.version):
                self.client.delete_prompt_version(name, str(number))


def _tags(record: PersonaRecord, check: str | None) -> dict[str, str]:
    tags = {
        "user_id": record.user_id,
        "persona_version": str(record.version),
        "parent_version": "" if record.parent is None else str(record.parent),
        "source": record.source,
        "strategy": record.strategy or "",
        "run_id": record.mlflow_run_id or "",
        "scores": json.dumps(_plain(record.scores), sort_keys=True),
    }
    if check is not None:
        tags["persona_check"] = check
    return tags


def _plain(scores: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (scores or {}).items() if isinstance(v, str | int | float | bool) or v is None}


@contextlib.contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    """MLflow's exceptions as `TrackingError` saying what failed."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise TrackingError(f"{what}: {exc}") from exc
