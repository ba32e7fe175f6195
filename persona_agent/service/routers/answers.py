"""The user's persona answers (at most `max_concurrent_answers` at once, see `deps.answer`)."""

from __future__ import annotations

import asyncio

from fastapi import Request

from persona_agent.service.deps import Caller, User, answer, spend_rows, workspace
from persona_agent.service.responses import RespondOut
from persona_agent.service.routers import area_router
from persona_agent.service.schemas import RespondIn

router = area_router("answers")


# `interaction_id` is sent only with `record`: unset fields are left out.
@router.post("/v1/users/{user_id}/respond", response_model_exclude_unset=True)
async def respond(user_id: User, body: RespondIn, request: Request, caller: Caller) -> RespondOut:
    """Answer with the user's live persona (or `version`); with `record`, keep the exchange in memory."""
    if body.record:
        spend_rows(request, caller, 1, "record")
    inputs = body.request if body.request is not None else body.inputs
    reply = await answer(request, user_id, inputs, body.version)
    if not body.record:
        return RespondOut(**reply.model_dump())
    query = body.request if body.request is not None else next(iter(body.inputs.values()))
    interaction_id = await asyncio.to_thread(
        workspace(request).store.add_interaction,
        user_id,
        query,
        reply.text,
        task="agent",
        metadata={"source": "agent", "persona_version": reply.persona_version},
    )
    return RespondOut(**reply.model_dump(), interaction_id=interaction_id)
