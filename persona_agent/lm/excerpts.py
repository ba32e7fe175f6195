"""LM failures told in a log line of bounded size.

DSPy's `AdapterParseError` carries the whole LM response in its message: a step truncated at `max_tokens` is
kilobytes of text (and may quote the user's data) in every log line that prints the error. A log gets the
error's type, its first line, and a short excerpt of the response with its length instead.
"""

from __future__ import annotations

EXCERPT_CHARS = 200


def error_excerpt(exc: BaseException, limit: int = EXCERPT_CHARS) -> str:
    """`exc` for a log line: type, first line (at most `limit` characters), and for an unparsable LM response
    its length and first `limit` characters."""
    first_line = str(exc).strip().split("\n", 1)[0].strip()
    text = f"{type(exc).__name__}: {_clip(first_line, limit)}"
    response = getattr(exc, "lm_response", None)
    if isinstance(response, str):
        text += f" (LM response, {len(response)} chars: {_clip(response, limit)!r})"
    return text


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
