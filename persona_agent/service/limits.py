"""Limits of the service: the request-body size (plain ASGI middleware: 413 before the handler reads past the
limit) and per-user quotas (429 with `Retry-After`)."""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

from starlette.exceptions import HTTPException

from persona_agent.core.errors import InvalidInputError, PersonaAgentError


class QuotaExceededError(PersonaAgentError):
    """A user token is over one of its quotas (HTTP 429); `retry_after` is whole seconds until it may succeed."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(retry_after))


class RowQuota:
    """Rows a user may write per minute: a token bucket per user (burst = the per-minute quota, refilled
    evenly). In memory, per process; `forget(user)` drops a user's bucket (it is per-user state)."""

    def __init__(self, rows_per_minute: int, *, max_users: int = 100_000) -> None:
        self.capacity = float(rows_per_minute)
        self.rate = rows_per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (rows left, at monotonic time)
        self._max_users = max_users
        self._lock = threading.Lock()

    def _level(self, user_id: str, now: float) -> float:
        left, at = self._buckets.get(user_id, (self.capacity, now))
        return min(self.capacity, left + (now - at) * self.rate)

    def take(self, user_id: str, rows: int, field: str) -> None:
        """Spend `rows` of the user's quota, or raise `QuotaExceededError` (nothing spent); more rows than the
        whole quota can never pass: `InvalidInputError` naming `field`."""
        if rows > self.capacity:
            raise InvalidInputError(field, rows, f"more rows than the quota of {self.capacity:.0f} per minute")
        now = time.monotonic()
        with self._lock:
            level = self._level(user_id, now)
            if level < rows:
                wait = math.ceil((rows - level) / self.rate)
                raise QuotaExceededError(f"over the quota of {self.capacity:.0f} rows per minute", wait)
            if len(self._buckets) >= self._max_users:  # full buckets are the same as none: drop them
                self._buckets = {u: b for u, b in self._buckets.items() if self._level(u, now) < self.capacity}
            self._buckets[user_id] = (level - rows, now)

    def forget(self, user_id: str) -> int:
        with self._lock:
            return int(self._buckets.pop(user_id, None) is not None)


class _TooLargeError(HTTPException):
    """Raised from `receive`: an HTTPException, so the framework answers 413 (not its generic 400 for a body
    that failed to read); the middleware answers itself if the app let it through."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body over the limit of {max_bytes} bytes")


async def json_reply(send: Any, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """A JSON `{"detail": ...}` response sent straight from ASGI middleware."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """Refuse bodies over `max_bytes`: by Content-Length at once, or while a chunked body streams in."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await json_reply(send, 400, "invalid Content-Length")
                return
            if size > self.max_bytes:
                await json_reply(send, 413, f"request body over the limit of {self.max_bytes} bytes")
                return
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLargeError(self.max_bytes)
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _TooLargeError:
            if not started:
                await json_reply(send, 413, f"request body over the limit of {self.max_bytes} bytes")
