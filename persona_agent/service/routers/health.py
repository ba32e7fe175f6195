"""`/healthz` and `/readyz`: open to all (no credential), for probes."""

from __future__ import annotations

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse

from persona_agent.service.responses import Liveness, Readiness
from persona_agent.service.routers import area_router

router = area_router("health")
OPEN_PATHS = ("/healthz", "/readyz")


@router.get("/healthz")
async def healthz() -> Liveness:
    """Liveness: the process answers."""
    return Liveness()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the workspace is open, its database answers and the LM is set up."""
    workspace = getattr(request.app.state, "workspace", None)
    if workspace is None or not getattr(request.app.state, "ready", False):
        return JSONResponse({"status": "starting"}, status_code=503)
    try:
        await asyncio.to_thread(workspace.store.query, "SELECT 1")
    except Exception as exc:  # any database failure means not ready
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    return JSONResponse({"status": "ready"})
