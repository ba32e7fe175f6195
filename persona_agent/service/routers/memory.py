"""A user's episodic memory: add interactions, record feedback, forget the user everywhere."""

from __future__ import annotations

import asyncio

from fastapi import Request

from persona_agent.service.deps import Caller, User, spend_rows, workspace
from persona_agent.service.responses import FeedbackOut, ForgetOut, IngestOut
from persona_agent.service.routers import area_router
from persona_agent.service.schemas import FeedbackIn, InteractionsIn

router = area_router("memory")


@router.post("/v1/users/{user_id}/interactions")
async def add_interactions(user_id: User, body: InteractionsIn, request: Request, caller: Caller) -> IngestOut:
    """Store interactions (query, the response the user wanted) in the user's episodic memory, in one
    transaction. An item repeating a stored one (same time as given, query and response; an item without a
    time by its content alone) is skipped: `ids` then holds the stored row's id, and `skipped` counts them."""
    spend_rows(request, caller, len(body.items), "items")
    store = workspace(request).store
    records = [(user_id, item.model_dump()) for item in body.items]
    report = await asyncio.to_thread(store.ingest, records)
    return IngestOut(user_id=user_id, ids=list(report.ids), added=report.added, skipped=report.skipped)


@router.post("/v1/users/{user_id}/feedback")
async def feedback(user_id: User, body: FeedbackIn, request: Request, caller: Caller) -> FeedbackOut:
    """The response the user really wanted, into episodic memory (the next compile aligns on it)."""
    spend_rows(request, caller, 1, "response")
    store = workspace(request).store

    def record() -> str:
        query = store.get(user_id, body.interaction_id).query if body.interaction_id else body.request
        meta = {"source": "feedback", **({"answers": body.interaction_id} if body.interaction_id else {})}
        return store.add_interaction(user_id, query, body.response, task=body.task, metadata=meta)

    return FeedbackOut(user_id=user_id, id=await asyncio.to_thread(record))


@router.delete("/v1/users/{user_id}")
async def forget(user_id: User, request: Request) -> ForgetOut:
    """Forget the user everywhere (memory rows and vectors, personas, MLflow, caches, jobs); counts."""
    report = await asyncio.to_thread(workspace(request).forget, user_id)
    return ForgetOut(**report.model_dump())
