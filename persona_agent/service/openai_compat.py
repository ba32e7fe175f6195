"""`POST /v1/chat/completions`, OpenAI-compatible: the request's `user` picks whose persona answers, so any
OpenAI client (base URL = this service, API key = the admin key or that user's token) gets a personalized
agent. The last user message is the request; earlier turns are passed along as context. Streaming sends the
whole answer as one chunk (the agent answers after its tool loop, not token by token).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from persona_agent.core.errors import InvalidInputError
from persona_agent.service.schemas import ChatCompletionIn, ChatMessage
from persona_agent.workspace import Answer


def conversation_request(messages: list[ChatMessage], max_chars: int) -> str:
    """The agent's request text: the last user message, preceded by earlier turns if there are any. Each message's
    text is held to `max_chars` (the store's `max_text_chars`, as for ingested texts)."""
    for i, message in enumerate(messages):
        if len(message.text()) > max_chars:
            raise InvalidInputError(f"messages[{i}].content", message.text(), f"must be at most {max_chars} characters")
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise InvalidInputError("messages", [m.role for m in messages], "needs at least one user message")
    request = messages[last].text().strip()
    if not request:
        raise InvalidInputError(f"messages[{last}].content", messages[last].content, "must not be empty")
    earlier = [f"{m.role}: {m.text().strip()}" for m in messages[:last] if m.text().strip()]
    if not earlier:
        return request
    return "Conversation so far:\n" + "\n".join(earlier) + f"\n\nRequest: {request}"


def completion(body: ChatCompletionIn, answer: Answer) -> dict[str, Any]:
    usage = answer.usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": f"{answer.user_id}@v{answer.persona_version}",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "total_tokens": int(usage.get("total_tokens", 0)),
        },
    }


async def completion_chunks(body: ChatCompletionIn, answer: Answer) -> AsyncIterator[str]:
    """Server-sent events of `chat.completion.chunk` objects, as OpenAI streams them."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": f"{answer.user_id}@v{answer.persona_version}",
    }
    deltas = [
        ({"role": "assistant", "content": answer.text}, None),
        ({}, "stop"),
    ]
    for delta, finish in deltas:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"
