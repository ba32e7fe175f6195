"""One `APIRouter` per area of the service; `create_app` includes them in this order (which is the match order:
`/personas/diff` before `/personas/{version}`). Every router's routes are `CheckedBodyRoute`s."""

from __future__ import annotations

from fastapi import APIRouter

from persona_agent.service.bodies import CheckedBodyRoute


def area_router(tag: str) -> APIRouter:
    """A router whose routes check JSON bodies first (`CheckedBodyRoute`), tagged with its area."""
    return APIRouter(route_class=CheckedBodyRoute, tags=[tag])
