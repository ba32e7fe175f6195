"""A user's persona versions: list, diff, read one, promote one, roll back (optimistic locking: 409 if stale)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Query, Request

from persona_agent.service.deps import User, workspace
from persona_agent.service.responses import PersonaDiff, PersonaList
from persona_agent.service.routers import area_router
from persona_agent.service.schemas import PromoteIn, RollbackIn
from persona_agent.stores.personas import PersonaRecord
from persona_agent.workspace import PersonaChange

router = area_router("personas")


@router.get("/v1/users/{user_id}/personas")
async def list_personas(user_id: User, request: Request) -> PersonaList:
    registry = workspace(request).registry
    live = await asyncio.to_thread(registry.live, user_id)
    history = await asyncio.to_thread(registry.history, user_id)
    return PersonaList(user_id=user_id, live=live, versions=history)


@router.get("/v1/users/{user_id}/personas/diff")  # before /personas/{version}, which would match "diff"
async def diff_personas(
    user_id: User, request: Request, a: Annotated[str, Query()], b: Annotated[str, Query()] = "live"
) -> PersonaDiff:
    registry = workspace(request).registry
    return PersonaDiff(user_id=user_id, a=a, b=b, diff=await asyncio.to_thread(registry.diff, user_id, a, b))


@router.get("/v1/users/{user_id}/personas/{version}")
async def get_persona(user_id: User, version: str, request: Request) -> PersonaRecord:
    return await asyncio.to_thread(workspace(request).registry.get, user_id, version)


@router.post("/v1/users/{user_id}/personas/{version}/promote")
async def promote(user_id: User, version: str, request: Request, body: PromoteIn | None = None) -> PersonaChange:
    expected = body.expected_revision if body else None
    return await asyncio.to_thread(workspace(request).promote, user_id, version, expected_revision=expected)


@router.post("/v1/users/{user_id}/personas/rollback")
async def rollback(user_id: User, request: Request, body: RollbackIn | None = None) -> PersonaChange:
    body = body or RollbackIn()
    return await asyncio.to_thread(
        workspace(request).rollback, user_id, body.to, expected_revision=body.expected_revision
    )
