"""What the routers share: the caller (as `RequireCredential` found it), the path's user once the caller may reach
it, the workspace, bounded answers and the row quota."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Request

from persona_agent.service.auth import AuthError, Principal
from persona_agent.stores.validation import validate_user_id
from persona_agent.workspace import Answer, Workspace

UserPath = Annotated[str, Path(min_length=1, max_length=128, description="the user id")]


async def principal(request: Request) -> Principal:
    """The caller, as `RequireCredential` found it before the body was read. (Async, like every dependency here:
    FastAPI would run a sync one in its thread pool, a thread hop per request.)"""
    found = getattr(request.state, "principal", None)
    if not isinstance(found, Principal):
        raise AuthError("missing credentials: send 'Authorization: Bearer <API key or user token>'")
    return found


Caller = Annotated[Principal, Depends(principal)]


async def user_scope(user_id: UserPath, caller: Caller) -> str:
    """The path's user, once the caller is known to reach it (auth first: 401/403 before 422)."""
    caller.require_user(user_id)
    return validate_user_id(user_id)


User = Annotated[str, Depends(user_scope)]


def workspace(request: Request) -> Workspace:
    return request.app.state.workspace


async def answer(request: Request, user_id: str, inputs: dict[str, str] | str, version: Any = None) -> Answer:
    """An agent answer, at most `max_concurrent_answers` at once (FIFO): each answer's DSPy steps run on the event
    loop (~2 ms per LM step), so the bound keeps the loop's bursts short and /healthz fast under load."""
    async with request.app.state.answers:
        return await workspace(request).arespond(user_id, inputs, version=version)


def spend_rows(request: Request, caller: Principal, rows: int, field: str) -> None:
    """Count rows a user token writes against its per-minute quota (429 over it); the admin is exempt."""
    if not caller.admin:
        request.app.state.rows.take(caller.user_id, rows, field)
