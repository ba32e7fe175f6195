"""Memoised system messages: a DSPy adapter rebuilds each call's system message (field descriptions, JSON
schemas, instructions) from the signature, which costs about a millisecond per LM call. A signature class never
changes (a persona is applied by making a new class, never by mutating one), so its system message can be
kept as long as the class lives. The service answers with the same few signatures all day.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import dspy


class SystemMessageCache:
    """Mixin: `format_system_message` memoised per signature class (weakly: a dropped class frees its entry)."""

    def format_system_message(self, signature: Any) -> str:
        cache: weakref.WeakKeyDictionary = self.__dict__.setdefault("_system_messages", weakref.WeakKeyDictionary())
        lock: threading.Lock = self.__dict__.setdefault("_system_lock", threading.Lock())
        with lock:
            text = cache.get(signature)
        if text is None:
            text = super().format_system_message(signature)  # type: ignore[misc]
            with lock:
                cache[signature] = text
        return text


_classes: dict[type, type] = {}


def with_system_message_cache(adapter: dspy.Adapter) -> dspy.Adapter:
    """A copy of `adapter` (same class and settings) whose system messages are memoised per signature class."""
    base = type(adapter)
    if isinstance(adapter, SystemMessageCache):
        return adapter
    cls = _classes.get(base)
    if cls is None:
        cls = _classes.setdefault(base, type(f"Cached{base.__name__}", (SystemMessageCache, base), {}))
    cached = cls.__new__(cls)
    cached.__dict__.update(adapter.__dict__)
    return cached
