"""The error hierarchy: every failure a caller can act on has its own type.

Bad input raises a subclass of both `PersonaAgentError` and `ValueError`, names the field and value,
and is raised before anything is written.
"""

from __future__ import annotations

from typing import Any


class PersonaAgentError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidInputError(PersonaAgentError, ValueError):
    """An argument failed validation. `field` names it; nothing was changed."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {field}={shown}: {reason}")


class InvalidUserIdError(InvalidInputError):
    """A user id is empty, too long, or holds whitespace or control characters."""


class EmbeddingDimensionError(InvalidInputError):
    """A vector does not have the dimension the store was created with."""


class UnknownUserError(PersonaAgentError, LookupError):
    """The user has no rows where some were required."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        super().__init__(f"unknown user {user_id!r}: the store holds nothing for this user")


class StoreError(PersonaAgentError):
    """The memory store cannot be opened or used as asked (schema mismatch, wrong embedder, ...)."""


class SchemaVersionError(StoreError):
    """A database was written by a newer PersonaAgent than this one, or cannot be migrated."""


class ConfigError(PersonaAgentError, ValueError):
    """A setting is invalid (unknown LM spec, missing model file, ...)."""


class ModelFileError(PersonaAgentError):
    """A model file is missing, incomplete or corrupted; the message says how to fix it."""


class LocalRuntimeMissingError(PersonaAgentError, ImportError):
    """The in-process model needs the `local` extra (llama.cpp runtime and model parts), which is not installed."""


class DatasetFormatError(InvalidInputError):
    """A dataset file is malformed. Names the file, the record (index or id) and the field, so it can be fixed."""

    def __init__(self, path: Any, record: Any, field: str, value: Any, reason: str) -> None:
        super().__init__(field, value, reason)
        self.path = str(path)
        self.record = record
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        self.args = (f"{self.path}: record {record}: field {field!r}={shown}: {reason}",)


class DataFileNotFoundError(PersonaAgentError, FileNotFoundError):
    """A data file that a loader or builder needs does not exist; the message names the path to provide."""

    def __init__(self, path: Any, hint: str = "") -> None:
        self.path = str(path)
        super().__init__(f"data file not found: {self.path}" + (f" ({hint})" if hint else ""))


class PersonaNotFoundError(PersonaAgentError, LookupError):
    """A user has no persona version matching the request (no versions at all, or not this version/alias)."""

    def __init__(self, user_id: str, version: Any = None) -> None:
        self.user_id = user_id
        self.version = version
        what = "no persona versions" if version is None else f"no persona version {version!r}"
        super().__init__(f"user {user_id!r} has {what}")


class VersionConflictError(PersonaAgentError):
    """The live persona changed since the caller read it (optimistic locking): re-read and retry."""

    def __init__(self, user_id: str, expected: int | None, actual: int | None) -> None:
        self.user_id = user_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"the live persona of {user_id!r} is at revision {actual}, not {expected}: someone changed it; "
            "read it again and retry"
        )


class ProgramFormatError(PersonaAgentError, ValueError):
    """A saved program cannot be loaded (unknown or newer format, unknown signature); the message says what to do."""


class TrackingError(PersonaAgentError):
    """MLflow could not record or return what was asked (server unreachable, run or model missing)."""


class ProfileEchoError(PersonaAgentError):
    """The LM handed back the profile prompt's own text instead of a profile, asked twice; nothing was stored.

    `passage` is the echoed text. The previous profile version, if any, stays the latest."""

    def __init__(self, passage: str) -> None:
        self.passage = passage
        super().__init__(
            f"the LM wrote the profile prompt's own text ({passage!r}) instead of a profile, also when asked again "
            "with sampling; no profile was stored. A larger LM, or fewer records per call (chunk_size), may help"
        )
