"""The HTTP service: `create_app()` builds a FastAPI app over one `Workspace` (nothing happens at import).

Handlers are async: answers run the agent with `acall` under a per-request `dspy.context` (the workspace's LM;
never `dspy.configure` per request); DuckDB, embedding and MLflow work runs in worker threads. Every route but
`/healthz` and `/readyz` needs the admin API key or, for one user's routes, that user's token (401 without a
valid credential, checked before the body is read; 403 for another user's); the API docs need the admin key
unless the `docs_access` setting says otherwise. Bodies are size-limited (413); invalid input is a 422 naming
the field; unknown users or versions 404; a stale `expected_revision` 409. A user token is held to quotas (rows
written per minute, pending compile jobs): 429 with `Retry-After`.

Run it with `persona-agent serve`, or `uvicorn --factory persona_agent.service:create_app`.
"""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import dspy
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from persona_agent.compiling import CompileCancelledError, CompileOptions
from persona_agent.core.config import Settings
from persona_agent.core.errors import (
    InvalidInputError,
    PersonaAgentError,
    PersonaNotFoundError,
    TrackingError,
    UnknownUserError,
    VersionConflictError,
)
from persona_agent.service.auth import Authenticator, AuthError, ForbiddenError, Principal, RequireCredential
from persona_agent.service.bodies import CheckedBodyRoute
from persona_agent.service.jobs import JobManager
from persona_agent.service.limits import BodySizeLimit, QuotaExceededError, RowQuota
from persona_agent.service.openai_compat import completion, completion_chunks, conversation_request
from persona_agent.service.schemas import (
    ChatCompletionIn,
    FeedbackIn,
    InteractionsIn,
    PromoteIn,
    RespondIn,
    RollbackIn,
    TokenIn,
)
from persona_agent.stores.validation import validate_user_id
from persona_agent.workspace import Answer, Workspace

UserPath = Annotated[str, Path(min_length=1, max_length=128, description="the user id")]
OPEN_PATHS = ("/healthz", "/readyz")


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


def _workspace(request: Request) -> Workspace:
    return request.app.state.workspace


async def _answer(request: Request, user_id: str, inputs: dict[str, str] | str, version: Any = None) -> Answer:
    """An agent answer, at most `max_concurrent_answers` at once (FIFO): each answer's DSPy steps run on the event
    loop (~2 ms per LM step), so the bound keeps the loop's bursts short and /healthz fast under load."""
    async with request.app.state.answers:
        return await _workspace(request).arespond(user_id, inputs, version=version)


def _spend_rows(request: Request, caller: Principal, rows: int, field: str) -> None:
    """Count rows a user token writes against its per-minute quota (429 over it); the admin is exempt."""
    if not caller.admin:
        request.app.state.rows.take(caller.user_id, rows, field)


def _errors(app: FastAPI) -> None:
    def reply(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        return reply(401, str(exc), {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(ForbiddenError)
    async def _forbidden(request: Request, exc: ForbiddenError) -> JSONResponse:
        return reply(403, str(exc))

    @app.exception_handler(QuotaExceededError)
    async def _quota(request: Request, exc: QuotaExceededError) -> JSONResponse:
        return reply(429, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError) -> JSONResponse:
        where = "path" if exc.field in request.path_params else "query" if exc.field in request.query_params else "body"
        parts = [int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", exc.field) if p]
        loc = parts if parts[:1] in (["body"], ["path"], ["query"]) else [where, *parts]
        return reply(422, [{"loc": loc, "msg": exc.reason, "type": "invalid_input"}])

    @app.exception_handler(PersonaAgentError)
    async def _domain(request: Request, exc: PersonaAgentError) -> JSONResponse:
        if isinstance(exc, UnknownUserError | PersonaNotFoundError):
            return reply(404, str(exc))
        if isinstance(exc, VersionConflictError | CompileCancelledError):
            return reply(409, str(exc))
        if isinstance(exc, TrackingError):
            return reply(502, str(exc))
        return reply(500, f"{type(exc).__name__}: {exc}")


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
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

    @app.post("/v1/tokens", tags=["auth"])
    async def mint(body: TokenIn, request: Request, caller: Caller) -> dict[str, Any]:
        """A user token (admin only): it reaches that user's routes and nothing else."""
        caller.require_admin()
        user_id = validate_user_id(body.user_id)
        return {"user_id": user_id, "token": request.app.state.auth.mint(user_id, body.ttl_seconds)}

    @app.post("/v1/users/{user_id}/tokens/revoke", tags=["auth"])
    async def revoke_tokens(user_id: UserPath, request: Request, caller: Caller) -> dict[str, Any]:
        """Kill every token of the user issued until now (admin only); tokens minted afterwards work."""
        caller.require_admin()
        user_id = validate_user_id(user_id)
        revoked = await asyncio.to_thread(_workspace(request).revocations.revoke, user_id)
        return {"user_id": user_id, "revoked_at": revoked}

    @app.post("/v1/users/{user_id}/interactions", tags=["memory"])
    async def add_interactions(user_id: User, body: InteractionsIn, request: Request, caller: Caller) -> dict:
        """Store interactions (query, the response the user wanted) in the user's episodic memory, in one
        transaction. An item repeating a stored one (same time as given, query and response; an item without a
        time by its content alone) is skipped: `ids` then holds the stored row's id, and `skipped` counts them."""
        _spend_rows(request, caller, len(body.items), "items")
        store = _workspace(request).store
        records = [(user_id, item.model_dump()) for item in body.items]
        report = await asyncio.to_thread(store.ingest, records)
        return {"user_id": user_id, "ids": list(report.ids), "added": report.added, "skipped": report.skipped}

    @app.post("/v1/users/{user_id}/respond", tags=["answers"])
    async def respond(user_id: User, body: RespondIn, request: Request, caller: Caller) -> dict[str, Any]:
        """Answer with the user's live persona (or `version`); with `record`, keep the exchange in memory."""
        if body.record:
            _spend_rows(request, caller, 1, "record")
        workspace = _workspace(request)
        inputs = body.request if body.request is not None else body.inputs
        answer = await _answer(request, user_id, inputs, body.version)
        out: dict[str, Any] = answer.model_dump()
        if body.record:
            query = body.request if body.request is not None else next(iter(body.inputs.values()))
            out["interaction_id"] = await asyncio.to_thread(
                workspace.store.add_interaction,
                user_id,
                query,
                answer.text,
                task="agent",
                metadata={"source": "agent", "persona_version": answer.persona_version},
            )
        return out

    @app.post("/v1/users/{user_id}/feedback", tags=["memory"])
    async def feedback(user_id: User, body: FeedbackIn, request: Request, caller: Caller) -> dict[str, Any]:
        """The response the user really wanted, into episodic memory (the next compile aligns on it)."""
        _spend_rows(request, caller, 1, "response")
        store = _workspace(request).store

        def record() -> str:
            query = store.get(user_id, body.interaction_id).query if body.interaction_id else body.request
            meta = {"source": "feedback", **({"answers": body.interaction_id} if body.interaction_id else {})}
            return store.add_interaction(user_id, query, body.response, task=body.task, metadata=meta)

        return {"user_id": user_id, "id": await asyncio.to_thread(record)}

    @app.post("/v1/users/{user_id}/compile", status_code=202, tags=["personas"])
    async def compile_persona(
        user_id: User, request: Request, caller: Caller, body: CompileOptions | None = None
    ) -> dict[str, Any]:
        """Start a background compile (validated now, estimate included); poll `GET /v1/jobs/{id}`."""
        jobs: JobManager = request.app.state.jobs
        limit = None if caller.admin else request.app.state.settings.quota_pending_jobs
        job = await asyncio.to_thread(jobs.submit, user_id, body or CompileOptions(), max_pending=limit)
        return job.model_dump(mode="json")

    @app.get("/v1/jobs/{job_id}", tags=["personas"])
    async def get_job(job_id: Annotated[str, Path(max_length=64)], request: Request, caller: Caller) -> JSONResponse:
        job = request.app.state.jobs.get(job_id)
        if job is None:
            return JSONResponse({"detail": f"no job {job_id!r}"}, status_code=404)
        caller.require_user(job.user_id)
        return JSONResponse(job.model_dump(mode="json"))

    @app.get("/v1/users/{user_id}/personas", tags=["personas"])
    async def list_personas(user_id: User, request: Request) -> dict[str, Any]:
        registry = _workspace(request).registry
        live = await asyncio.to_thread(registry.live, user_id)
        history = await asyncio.to_thread(registry.history, user_id)
        return {
            "user_id": user_id,
            "live": live.model_dump(mode="json") if live else None,
            "versions": [r.model_dump(mode="json") for r in history],
        }

    @app.get("/v1/users/{user_id}/personas/diff", tags=["personas"])
    async def diff_personas(
        user_id: User, request: Request, a: Annotated[str, Query()], b: Annotated[str, Query()] = "live"
    ) -> dict[str, Any]:
        registry = _workspace(request).registry
        return {"user_id": user_id, "a": a, "b": b, "diff": await asyncio.to_thread(registry.diff, user_id, a, b)}

    @app.get("/v1/users/{user_id}/personas/{version}", tags=["personas"])
    async def get_persona(user_id: User, version: str, request: Request) -> dict[str, Any]:
        record = await asyncio.to_thread(_workspace(request).registry.get, user_id, version)
        return record.model_dump(mode="json")

    @app.post("/v1/users/{user_id}/personas/{version}/promote", tags=["personas"])
    async def promote(user_id: User, version: str, request: Request, body: PromoteIn | None = None) -> dict:
        expected = body.expected_revision if body else None
        change = await asyncio.to_thread(
            _workspace(request).promote, user_id, version, expected_revision=expected
        )  # fmt: skip
        return change.model_dump(mode="json")

    @app.post("/v1/users/{user_id}/personas/rollback", tags=["personas"])
    async def rollback(user_id: User, request: Request, body: RollbackIn | None = None) -> dict[str, Any]:
        body = body or RollbackIn()
        change = await asyncio.to_thread(
            _workspace(request).rollback, user_id, body.to, expected_revision=body.expected_revision
        )
        return change.model_dump(mode="json")

    @app.delete("/v1/users/{user_id}", tags=["memory"])
    async def forget(user_id: User, request: Request) -> dict[str, Any]:
        """Forget the user everywhere (memory rows and vectors, personas, MLflow, caches, jobs); counts."""
        report = await asyncio.to_thread(_workspace(request).forget, user_id)
        return {**report.model_dump(), "total": report.total}

    @app.get("/v1/models", tags=["openai"])
    async def models(caller: Caller) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "persona-agent", "object": "model", "owned_by": "persona-agent"}]}

    @app.post("/v1/chat/completions", tags=["openai"], response_model=None)
    async def chat(body: ChatCompletionIn, request: Request, caller: Caller) -> dict | StreamingResponse:
        """OpenAI-compatible chat: `user` selects the persona (default: the token's own user)."""
        user_id = body.user or caller.user_id
        if user_id is None:
            raise InvalidInputError("user", None, "name the user whose persona answers")
        caller.require_user(user_id)
        user_id = validate_user_id(user_id, "user")
        workspace = _workspace(request)
        text = conversation_request(body.messages, workspace.store.max_text_chars)
        answer = await _answer(request, user_id, text)
        if body.stream:
            return StreamingResponse(completion_chunks(body, answer), media_type="text/event-stream")
        return completion(body, answer)


def create_app(
    settings: Settings | None = None, *, workspace: Workspace | None = None, lm: dspy.BaseLM | None = None
) -> FastAPI:
    """The service over `workspace` (default: one opened from `settings` at startup, closed at shutdown).

    `lm` replaces the settings' LM for a workspace opened here. Raises `ConfigError` without an admin API key, or
    with a weak one or a weak token secret (see `persona_agent.service.auth.require_strong`).
    """
    settings = settings or (workspace.settings if workspace is not None else Settings())
    auth = Authenticator(settings)

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

    docs = {} if settings.docs_access != "off" else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="PersonaAgent",
        summary="Personalized LLM agents: each user's persona answers, learns from feedback and is re-compiled.",
        lifespan=lifespan,
        **docs,
    )
    app.router.route_class = CheckedBodyRoute  # before the routes are added
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
    _errors(app)
    _routes(app)
    return app
