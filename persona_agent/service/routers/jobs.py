"""Background compile jobs: start one for a user, poll it by id (see `persona_agent.service.jobs`)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Path, Request
from fastapi.responses import JSONResponse

from persona_agent.compiling import CompileOptions
from persona_agent.service.deps import Caller, User
from persona_agent.service.jobs import Job, JobManager
from persona_agent.service.routers import area_router

router = area_router("personas")  # tagged as before: in the docs, compile jobs belong to the personas


@router.post("/v1/users/{user_id}/compile", status_code=202)
async def compile_persona(user_id: User, request: Request, caller: Caller, body: CompileOptions | None = None) -> Job:
    """Start a background compile (validated now, estimate included); poll `GET /v1/jobs/{id}`."""
    jobs: JobManager = request.app.state.jobs
    limit = None if caller.admin else request.app.state.settings.quota_pending_jobs
    return await asyncio.to_thread(jobs.submit, user_id, body or CompileOptions(), max_pending=limit)


@router.get("/v1/jobs/{job_id}", response_model=Job)
async def get_job(job_id: Annotated[str, Path(max_length=64)], request: Request, caller: Caller) -> Job | JSONResponse:
    job = request.app.state.jobs.get(job_id)
    if job is None:
        return JSONResponse({"detail": f"no job {job_id!r}"}, status_code=404)
    caller.require_user(job.user_id)
    return job
