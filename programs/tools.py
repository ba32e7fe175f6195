"""The agent's tools, bound to one user and one point in time.

Each tool is built for a single call of the agent from a `ToolContext`, so it can only ever reach that
user's rows, and never rows at or after the context's cut-off (evaluation sets it to the query's time
so the agent cannot see the future). Tools return text observations for the LM.

Error policy: a tool that fails raises; the agent loop turns the exception into an observation
("error in search_memory: ...") and goes on. Tools never swallow errors themselves.

The tools are synchronous (DuckDB, FAISS and MiniLM calls block), so their `acall` runs them in a worker thread:
an agent called with `acall` (the service) never blocks its event loop on them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import dspy

from persona_agent.core.errors import InvalidInputError
from persona_agent.stores.knowledge import KnowledgeBase
from persona_agent.stores.memory import MemoryStore

MEMORY_TOOLS = ("search_memory", "recall_profile", "update_memory")
KNOWLEDGE_TOOLS = ("search_knowledge",)
ALL_TOOLS = MEMORY_TOOLS + KNOWLEDGE_TOOLS
MAX_K = 10


@dataclass(frozen=True)
class ToolContext:
    """What one agent call's tools may reach."""

    user_id: str
    store: MemoryStore | None = None
    knowledge: KnowledgeBase | None = None
    before: datetime | None = None  # strict cut-off for memory reads
    task: str | None = None  # restrict memory search to this task's rows
    allow_updates: bool = True  # update_memory writes; off in evaluation
    item_chars: int = 300  # longest text of one item shown to the LM


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _k(k: object) -> int:
    try:
        value = int(k)  # LMs send "3" as often as 3
    except (TypeError, ValueError):
        raise InvalidInputError("k", k, "must be a whole number") from None
    return max(1, min(MAX_K, value))


class ThreadedTool(dspy.Tool):
    """A synchronous tool whose async path runs it in a worker thread (carrying the caller's context).

    DSPy parses the function's signature on every build (~1 ms of pydantic JSON schemas); memoising that parse per
    function would save well under 1 % of a local-LM call (benchmarks/bench_adapter_cache.py), so it is not done."""

    async def acall(self, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.__call__, **kwargs)


def make_tools(ctx: ToolContext, names: Sequence[str] = ALL_TOOLS) -> list[ThreadedTool]:
    """The named tools that this context can support (memory tools need a store, knowledge a base)."""
    unknown = set(names) - set(ALL_TOOLS)
    if unknown:
        raise InvalidInputError("tools", sorted(unknown), f"unknown tools; choose from {list(ALL_TOOLS)}")

    def search_memory(query: str, k: int = 4) -> str:
        """Search this user's past interactions for the ones most similar to `query`; returns each
        past request with the response the user wanted."""
        hits = ctx.store.search(ctx.user_id, str(query), k=_k(k), before=ctx.before, task=ctx.task)
        if not hits:
            return "No past interactions found."
        lines = []
        for hit in hits:
            item = hit.interaction
            lines.append(
                f"{hit.rank + 1}. [{item.created_at:%Y-%m-%d}] request: {_clip(item.query, ctx.item_chars)} "
                f"-> user's response: {_clip(item.response, ctx.item_chars)} (similarity {hit.score:.2f})"
            )
        return "\n".join(lines)

    def recall_profile() -> str:
        """Recall this user's long-term profile (a summary of their stable preferences)."""
        profile = ctx.store.get_profile(ctx.user_id)
        return profile.text if profile is not None else "No profile has been built for this user yet."

    def update_memory(note: str) -> str:
        """Save a short note about this user (a preference or fact learned now) to their memory."""
        ctx.store.add_interaction(ctx.user_id, str(note), task="note", metadata={"source": "agent"})
        return "Saved to the user's memory."

    def search_knowledge(query: str, k: int = 3) -> str:
        """Search the knowledge base (public reference documents) for `query`."""
        hits = ctx.knowledge.search(str(query), k=_k(k))
        if not hits:
            return "No documents found."
        return "\n".join(f"{h.rank + 1}. {h.document.title}: {_clip(h.document.text, ctx.item_chars)}" for h in hits)

    available: dict[str, Callable[..., str]] = {}
    if ctx.store is not None:
        available["search_memory"] = search_memory
        available["recall_profile"] = recall_profile
        if ctx.allow_updates:
            available["update_memory"] = update_memory
    if ctx.knowledge is not None:
        available["search_knowledge"] = search_knowledge
    return [ThreadedTool(available[name]) for name in names if name in available]
