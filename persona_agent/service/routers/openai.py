"""The OpenAI-compatible routes: `GET /v1/models` and `POST /v1/chat/completions` (see `service/openai_compat.py`)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import StreamingResponse

from persona_agent.core.errors import InvalidInputError
from persona_agent.service.deps import Caller, answer, workspace
from persona_agent.service.openai_compat import completion, completion_chunks, conversation_request
from persona_agent.service.responses import ChatCompletion, ModelCard, ModelList
from persona_agent.service.routers import area_router
from persona_agent.service.schemas import ChatCompletionIn
from persona_agent.stores.validation import validate_user_id

router = area_router("openai")
MODEL = ModelCard(id="persona-agent", owned_by="persona-agent")


@router.get("/v1/models")
async def models(caller: Caller) -> ModelList:
    return ModelList(data=[MODEL])


# `response_model=None`: with `stream` the reply is a `StreamingResponse` (server-sent events), which a response
# model cannot describe; `responses` documents both forms (the JSON one as `ChatCompletion`) instead.
CHAT_RESPONSES = {
    200: {
        "model": ChatCompletion,
        "content": {"text/event-stream": {"schema": {"type": "string", "description": "chat.completion.chunk events"}}},
    }
}


@router.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
async def chat(body: ChatCompletionIn, request: Request, caller: Caller) -> dict | StreamingResponse:
    """OpenAI-compatible chat: `user` selects the persona (default: the token's own user)."""
    user_id = body.user or caller.user_id
    if user_id is None:
        raise InvalidInputError("user", None, "name the user whose persona answers")
    caller.require_user(user_id)
    user_id = validate_user_id(user_id, "user")
    text = conversation_request(body.messages, workspace(request).store.max_text_chars)
    reply = await answer(request, user_id, text)
    if body.stream:
        return StreamingResponse(completion_chunks(body, reply), media_type="text/event-stream")
    return completion(body, reply)
