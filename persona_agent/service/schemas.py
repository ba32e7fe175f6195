"""Request bodies of the HTTP service (the response bodies are in `service/responses.py`).

Unknown fields are refused (422 naming them) except on the OpenAI-compatible route, which accepts and ignores
OpenAI's sampling options so any OpenAI client works unchanged. Every JSON body has passed
`stores.validation.parse_json` first (see `service/bodies.py`); texts, times, ids and versions are then checked by
the same functions as in the store.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from persona_agent.stores.records import TimeValue

MAX_TEXT = 100_000  # a hard cap; the store's `max_text_chars` setting is usually lower and checked too


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InteractionIn(_Strict):
    query: str = Field(min_length=1, max_length=MAX_TEXT)
    response: str = Field(default="", max_length=MAX_TEXT)
    task: str | None = Field(default=None, max_length=128)
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: TimeValue | None = None


class InteractionsIn(_Strict):
    items: list[InteractionIn] = Field(min_length=1, max_length=1000)


class RespondIn(_Strict):
    """One request: `request` (the task's first input) or `inputs` (every input field by name)."""

    request: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    inputs: dict[str, str] | None = None
    version: int | str | None = Field(default=None, description="default: the live version")
    record: bool = Field(default=False, description="store the request and answer in the user's memory")

    @model_validator(mode="after")
    def _one_input(self) -> RespondIn:
        if (self.request is None) == (self.inputs is None):
            raise ValueError("give exactly one of request or inputs")
        return self


class FeedbackIn(_Strict):
    """The response the user really wanted, for an earlier `respond` (by `interaction_id`) or a `request`."""

    response: str = Field(min_length=1, max_length=MAX_TEXT)
    interaction_id: str | None = Field(default=None, max_length=64)
    request: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)
    task: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _one_reference(self) -> FeedbackIn:
        if (self.interaction_id is None) == (self.request is None):
            raise ValueError("give exactly one of interaction_id or request")
        return self


class PromoteIn(_Strict):
    expected_revision: int | None = Field(default=None, ge=0)


class RollbackIn(_Strict):
    to: int | str | None = None
    expected_revision: int | None = Field(default=None, ge=0)


class TokenIn(_Strict):
    user_id: str = Field(min_length=1, max_length=128)
    ttl_seconds: int | None = Field(
        default=None, gt=0, le=31_536_000, description="default: the token_ttl_seconds setting (every token expires)"
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        parts = self.content or []
        return "\n".join(str(p.get("text", "")) for p in parts if p.get("type") in ("text", "input_text"))


class ChatCompletionIn(BaseModel):
    """OpenAI's chat completion request; `user` selects the persona (a user token implies its own user)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    user: str | None = Field(default=None, max_length=128)
    stream: bool = False
