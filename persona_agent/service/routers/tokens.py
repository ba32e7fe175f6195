"""User tokens (admin only): mint one, or revoke every token of a user issued until now."""

from __future__ import annotations

import asyncio

from fastapi import Request

from persona_agent.service.deps import Caller, UserPath, workspace
from persona_agent.service.responses import RevokedOut, TokenOut
from persona_agent.service.routers import area_router
from persona_agent.service.schemas import TokenIn
from persona_agent.stores.validation import validate_user_id

router = area_router("auth")


@router.post("/v1/tokens")
async def mint(body: TokenIn, request: Request, caller: Caller) -> TokenOut:
    """A user token (admin only): it reaches that user's routes and nothing else."""
    caller.require_admin()
    user_id = validate_user_id(body.user_id)
    return TokenOut(user_id=user_id, token=request.app.state.auth.mint(user_id, body.ttl_seconds))


@router.post("/v1/users/{user_id}/tokens/revoke")
async def revoke_tokens(user_id: UserPath, request: Request, caller: Caller) -> RevokedOut:
    """Kill every token of the user issued until now (admin only); tokens minted afterwards work."""
    caller.require_admin()
    user_id = validate_user_id(user_id)
    revoked = await asyncio.to_thread(workspace(request).revocations.revoke, user_id)
    return RevokedOut(user_id=user_id, revoked_at=revoked)
