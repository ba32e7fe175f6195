"""The HTTP service: `create_app()` builds a FastAPI app over one `Workspace` (nothing happens at import).

Handlers are async: answers run the agent with `acall` under a per-request `dspy.context` (the workspace's LM;
never `dspy.configure` per request); DuckDB, embedding and MLflow work runs in worker threads. Every route but
`/healthz` and `/readyz` needs the admin API key or, for one user's routes, that user's token (401 without a
valid credential, checked before the body is read; 403 for another user's); the API docs need the admin key
unless the `docs_access` setting says otherwise. Bodies are size-limited (413); invalid input is a 422 naming
the field; unknown users or versions 404; a stale `expected_revision` 409. A user token is held to quotas (rows
written per minute, pending compile jobs): 429 with `Retry-After`.

The routes live in `service/routers/` (one `APIRouter` per area), their response models in `service/responses.py`;
this module only assembles the app: lifespan, middleware, error handlers and routers.

Run it with `persona-agent serve`, or `uvicorn --factory persona_agent.service:create_app`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import dspy
from fastapi import FastAPI

from persona_agent.core.config import Settings
from persona_agent.service.auth import Authenticator, RequireCredential
from persona_agent.service.bodies import CheckedBodyRoute
from persona_agent.service.handlers import add_error_handlers
from persona_agent.service.jobs import JobManager
from persona_agent.service.limits import BodySizeLimit, RowQuota
from persona_agent.service.routers import answers, health, jobs, memory, openai, personas, tokens
from persona_agent.workspace import Workspace

OPEN_PATHS = health.OPEN_PATHS
ROUTERS = (health, tokens, memory, answers, jobs, personas, openai)


def _lifespan(
    settings: Settings, auth: Authenticator, workspace: Workspace | None, lm: dspy.BaseLM | None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ws = workspace or await asyncio.to_thread(Workspace, settings, lm=lm)
        app.state.workspace = ws
        app.state.answers = asyncio.Semaphore(settings.max_concurrent_answers)
        app.state.jobs = JobManager(ws, workers=settings.compile_workers)
        app.state.rows = RowQuota(settings.quota_rows_per_minute)
        ws.add_forgettable("row_quota", app.state.rows)
        auth.revocations = ws.revocations
        await asyncio.to_thread(lambda: ws.lm)  # build the LM (and check its setting) before taking traffic
        # Startup's objects (modules, models, DSPy) leave the collector's generations: under load a full collection
        # scanning them paused the loop 300-500 ms (benchmarks/bench_service.py --load); back in at shutdown.
        gc.freeze()
        app.state.ready = True
        try:
            yield
        finally:
            gc.unfreeze()
            app.state.ready = False
            app.state.jobs.shutdown(wait=False)
            if workspace is None:
                ws.close()

    return lifespan


def create_app(
    settings: Settings | None = None, *, workspace: Workspace | None = None, lm: dspy.BaseLM | None = None
) -> FastAPI:
    """The service over `workspace` (default: one opened from `settings` at startup, closed at shutdown).

    `lm` replaces the settings' LM for a workspace opened here. Raises `ConfigError` without an admin API key, or
    with a weak one or a weak token secret (see `persona_agent.service.auth.require_strong`).
    """
    settings = settings or (workspace.settings if workspace is not None else Settings())
    auth = Authenticator(settings)
    docs = {} if settings.docs_access != "off" else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="PersonaAgent",
        summary="Personalized LLM agents: each user's persona answers, learns from feedback and is re-compiled.",
        lifespan=_lifespan(settings, auth, workspace, lm),
        **docs,
    )
    app.router.route_class = CheckedBodyRoute  # the routers' routes are CheckedBodyRoutes too (`area_router`)
    app.state.auth = auth
    app.state.settings = settings
    app.state.ready = False
    doc_paths = [p for p in (app.docs_url, app.redoc_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url) if p]
    public = settings.docs_access == "public"
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(  # added last, so it runs first: no body is read for an unauthenticated request
        RequireCredential,
        auth=auth,
        open_paths=[*OPEN_PATHS, *(doc_paths if public else [])],
        admin_paths=[] if public else doc_paths,
    )
    add_error_handlers(app)
    for area in ROUTERS:
        app.include_router(area.router)
    return app
