"""Input validation for everything that reaches the store, in one place.

Each check raises a typed `InvalidInputError` naming the field, before anything is written.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime

import numpy as np

from persona_agent.errors import EmbeddingDimensionError, InvalidInputError, InvalidUserIdError

MAX_USER_ID_CHARS = 128
_WHITESPACE = re.compile(r"\s")


def validate_user_id(user_id: object, field: str = "user_id") -> str:
    """Return `user_id` unchanged if it is a usable id: non-empty, <= 128 chars, no whitespace or controls."""
    if not isinstance(user_id, str):
        raise InvalidUserIdError(field, user_id, "must be a string")
    if not user_id:
        raise InvalidUserIdError(field, user_id, "must not be empty")
    if len(user_id) > MAX_USER_ID_CHARS:
        raise InvalidUserIdError(field, user_id, f"must be at most {MAX_USER_ID_CHARS} characters")
    if _WHITESPACE.search(user_id):
        raise InvalidUserIdError(field, user_id, "must not contain whitespace")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in user_id):
        raise InvalidUserIdError(field, user_id, "must not contain control or unassigned characters")
    return user_id


def validate_text(text: object, field: str, max_chars: int, *, allow_empty: bool = False) -> str:
    """Return `text` if it is a string that is non-empty (after stripping) and within `max_chars`."""
    if not isinstance(text, str):
        raise InvalidInputError(field, text, "must be a string")
    if not allow_empty and not text.strip():
        raise InvalidInputError(field, text, "must not be empty")
    if len(text) > max_chars:
        raise InvalidInputError(field, text, f"is {len(text)} characters; the limit is {max_chars}")
    return text


def validate_k(k: object, field: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InvalidInputError(field, k, "must be a positive integer")
    return k


def to_utc_naive(value: object, field: str) -> datetime:
    """Normalise a timestamp to naive UTC (how DuckDB stores it): aware datetimes are converted,
    naive ones are taken as UTC, numbers are Unix seconds."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    raise InvalidInputError(field, value, "must be a datetime or Unix seconds")


def validate_vectors(vectors: object, dim: int, rows: int | None, field: str = "embeddings") -> np.ndarray:
    """Return a C-contiguous float32 (rows, dim) matrix of finite values, or raise naming the field."""
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field, type(vectors).__name__, f"is not a numeric matrix ({exc})") from None
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != dim:
        raise EmbeddingDimensionError(field, tuple(array.shape), f"expected vectors of dimension {dim}")
    if rows is not None and array.shape[0] != rows:
        raise InvalidInputError(field, tuple(array.shape), f"expected {rows} vectors, one per item")
    if not np.isfinite(array).all():
        raise InvalidInputError(field, "non-finite", "vectors must hold finite numbers")
    return np.ascontiguousarray(array)
