"""Response bodies of the HTTP service, so `/openapi.json` documents what each route returns.

Where a route returns one of the library's own models (`PersonaRecord`, `PersonaChange`, `Job`, `Answer`) that model
is the response model; the rest are small models here. Each has exactly the keys the route has always sent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, computed_field

from persona_agent.stores.personas import LiveState, PersonaRecord
from persona_agent.stores.records import ForgetReport
from persona_agent.workspace import Answer


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """`ready` (200); `starting` or `unavailable` with the database's error in `detail` (503)."""

    status: Literal["ready", "starting", "unavailable"]
    detail: str | None = None


class TokenOut(BaseModel):
    user_id: str
    token: str = Field(description="send as 'Authorization: Bearer <token>'")


class RevokedOut(BaseModel):
    user_id: str
    revoked_at: float = Field(description="epoch seconds: tokens issued at or before it are dead")


class IngestOut(BaseModel):
    user_id: str
    ids: list[str] = Field(description="the stored row of each item, in order (a skipped repeat: the stored one)")
    added: int
    skipped: int


class RespondOut(Answer):
    """The answer; `interaction_id` only with `record` (the stored exchange)."""

    interaction_id: str | None = None


class FeedbackOut(BaseModel):
    user_id: str
    id: str = Field(description="the stored interaction")


class PersonaList(BaseModel):
    user_id: str
    live: LiveState | None
    versions: list[PersonaRecord]


class PersonaDiff(BaseModel):
    user_id: str
    a: str
    b: str
    diff: str = Field(description="a unified diff of the two persona texts")


class ForgetOut(ForgetReport):
    """What forget removed, and the `total` count of rows."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total(self) -> int:
        return super().total


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ChatMessageOut(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    finish_reason: str
    logprobs: None = None


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """OpenAI's `chat.completion` object (with `stream`: `chat.completion.chunk` server-sent events instead)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str = Field(description="<user>@v<persona version>")
    choices: list[ChatChoice]
    usage: ChatUsage
