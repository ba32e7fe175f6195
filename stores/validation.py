"""Input validation for everything that reaches the store, the CLI or the service, in one place.

Each check raises a typed `InvalidInputError` naming the field, before anything is written. The rules:
- texts (queries, responses, personas, every string in metadata and in request bodies): valid Unicode
  without lone surrogates (UTF-8 cannot carry them, so DuckDB and JSON responses cannot) and without NUL;
- ids (users, interactions): non-empty, at most 128 characters, no whitespace, control or unassigned characters;
- times: a datetime or finite Unix seconds between 0001-01-01 and 9999-12-31 (UTC), Python's datetime range;
- versions: whole numbers from 0 to 2**31 - 1 (DuckDB's INTEGER), as int or ASCII digits;
- JSON (metadata, request bodies): at most `MAX_JSON_DEPTH` levels, finite numbers, checked without recursion.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from persona_agent.core.errors import EmbeddingDimensionError, InvalidInputError, InvalidUserIdError

MAX_USER_ID_CHARS = 128
MAX_INT32 = 2**31 - 1
MAX_JSON_DEPTH = 64
TIME_RANGE = "between 0001-01-01 and 9999-12-31 (UTC)"
_WHITESPACE = re.compile(r"\s")
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_BAD_ID_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


def _id_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > MAX_USER_ID_CHARS:
        return f"must be at most {MAX_USER_ID_CHARS} characters"
    if _WHITESPACE.search(value):
        return "must not contain whitespace"
    if any(unicodedata.category(ch) in _BAD_ID_CATEGORIES for ch in value):
        return "must not contain control or unassigned characters"
    return None


def validate_user_id(user_id: object, field: str = "user_id") -> str:
    """Return `user_id` unchanged if it is a usable id: non-empty, <= 128 chars, no whitespace or controls."""
    problem = _id_problem(user_id)
    if problem is not None:
        raise InvalidUserIdError(field, user_id, problem)
    return user_id  # type: ignore[return-value]


def validate_id(value: object, field: str) -> str:
    """An id other than a user's (an interaction id), under the same rules as user ids."""
    problem = _id_problem(value)
    if problem is not None:
        raise InvalidInputError(field, value, problem)
    return value  # type: ignore[return-value]


def validate_chars(text: str, field: str) -> str:
    """Return `text` if it holds no lone surrogate and no NUL (see the module docstring)."""
    bad = _BAD_TEXT.search(text)
    if bad is not None:
        what = "a NUL character" if bad.group() == "\x00" else f"a lone surrogate (U+{ord(bad.group()):04X})"
        raise InvalidInputError(field, text, f"holds {what} at position {bad.start()}: give valid Unicode text")
    return text


def validate_text(text: object, field: str, max_chars: int, *, allow_empty: bool = False) -> str:
    """Return `text` if it is a string that is non-empty (after stripping), within `max_chars`, valid Unicode."""
    if not isinstance(text, str):
        raise InvalidInputError(field, text, "must be a string")
    if not allow_empty and not text.strip():
        raise InvalidInputError(field, text, "must not be empty")
    if len(text) > max_chars:
        raise InvalidInputError(field, text, f"is {len(text)} characters; the limit is {max_chars}")
    return validate_chars(text, field)


def validate_k(k: object, field: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_INT32:
        raise InvalidInputError(field, k, f"must be a whole number from 1 to {MAX_INT32}")
    return k


def validate_version(version: object, field: str = "version", *, aliases: Sequence[str] = ()) -> int:
    """A version number from an int or a string of ASCII digits ("²" is a digit to `str.isdigit`, not a number)."""
    if isinstance(version, str) and version.isascii() and version.isdigit() and len(version) <= 10:
        version = int(version)
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= MAX_INT32:
        named = f" or one of {list(aliases)}" if aliases else ""
        raise InvalidInputError(field, version, f"must be a version number from 0 to {MAX_INT32}{named}")
    return version


def to_utc_naive(value: object, field: str) -> datetime:
    """Normalise a time to naive UTC (how DuckDB stores it): aware datetimes are converted, naive ones are taken
    as UTC, numbers are Unix seconds. Times outside Python's datetime range once in UTC are refused."""
    if isinstance(value, bool) or not isinstance(value, datetime | int | float):
        raise InvalidInputError(field, value, "must be a datetime or Unix seconds")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError(field, value, "must be a finite number of Unix seconds")
    try:
        if isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    except (OverflowError, ValueError, OSError):
        raise InvalidInputError(field, value, f"is out of range: times must fall {TIME_RANGE}") from None


def check_json(value: object, field: str, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON data nested deeper than `max_depth`, with non-finite numbers, or with strings (keys too) that
    `validate_chars` refuses; walks with an explicit stack, so no depth can exhaust Python's recursion. Errors name
    the path from `field` ("metadata.tags.0"); with `field` "", from the top ("tags.0", or "(json)" for the top)."""
    stack: list[tuple[object, str, int]] = [(value, field, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            validate_chars(item, where or "(json)")
        elif isinstance(item, float) and not math.isfinite(item):
            raise InvalidInputError(where or "(json)", item, "must be a finite number")
        elif isinstance(item, Mapping | list | tuple):
            if depth >= max_depth:
                raise InvalidInputError(where, "(nested data)", f"is nested deeper than {max_depth} levels")
            pairs = item.items() if isinstance(item, Mapping) else enumerate(item)
            for key, child in pairs:
                name = str(key)[:40]
                if isinstance(key, str):
                    validate_chars(key, f"{where}.{name!r}" if where else repr(name))
                stack.append((child, f"{where}.{name}" if where else name, depth + 1))


def metadata_json(metadata: object, field: str = "metadata") -> str:
    """`metadata` (a mapping) as the JSON text the store keeps, after `check_json`."""
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(field, metadata, "must be a mapping")
    check_json(metadata, field)
    try:
        return json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(field, metadata, f"is not JSON-serialisable ({exc})") from None


def _refuse_constant(name: str) -> Any:
    raise InvalidInputError("(json)", name, "NaN and Infinity are not JSON numbers")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise InvalidInputError("(json)", text[:40], "is a number too large for a float")
    return number


def parse_json(data: str | bytes, field: str = "body") -> Any:
    """Parse a JSON document and `check_json` it: raises `json.JSONDecodeError` for what is not JSON at all, and
    `InvalidInputError` for JSON nested too deep, NaN / Infinity / overflowing numbers, integers over 4300 digits,
    or texts `validate_chars` refuses."""
    whole = field or "(json)"
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise InvalidInputError(whole, "(nested data)", f"is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as exc:
        raise InvalidInputError(whole, "(bytes)", f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except InvalidInputError as exc:
        raise InvalidInputError(whole, exc.value, exc.reason) from None
    except ValueError as exc:  # int() of an integer of over 4300 digits
        raise InvalidInputError(whole, "(number)", str(exc)) from None
    check_json(value, field)
    return value


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
