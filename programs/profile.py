"""Semantic memory: `ProfileBuilder` summarises a user's episodic memory into a stable profile.

Long histories are summarised map-reduce style: each chunk of records becomes a partial profile, and
partials are merged a chunk at a time until one is left, so every prompt stays bounded whatever the
history length; the result is held to a word limit. Each built profile is stored as a new version with the ids it was built from.

A small LM sometimes hands back the request instead of a profile (LaMP-2N user 6's profile was
SummarizeProfile's own instructions). Such a summary is asked for again, sampled; if that echoes too,
`ProfileEchoError` is raised and nothing is stored, so the previous profile version stays the latest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import datetime

import dspy

from persona_agent.core.errors import InvalidInputError, ProfileEchoError
from persona_agent.programs.prompt_echo import profile_prompt
from persona_agent.programs.steps import Predict, Steps, run_async, run_sync
from persona_agent.signatures.profile import SummarizeProfile
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.records import Interaction, Profile
from persona_agent.stores.validation import validate_k

logger = logging.getLogger(__name__)

# The second ask after an echo: sampled, with its own cache key (DSPy's rollout_id), so neither the response
# cache nor greedy decoding can hand the same echo back.
RESAMPLE = {"temperature": 0.7, "rollout_id": 1}


def format_records(records: Sequence[Interaction], item_chars: int = 240) -> str:
    lines = []
    for r in records:
        query = " ".join(r.query.split())[:item_chars]
        lines.append(f"- {query} -> {' '.join(r.response.split())[:item_chars] or '(no response)'}")
    return "\n".join(lines)


def clamp_words(text: str, max_words: int) -> str:
    """Cut to at most `max_words` words, at a sentence or line end when one is near."""
    words = text.split()
    if len(words) <= max_words:
        return text.strip()
    cut = " ".join(words[:max_words])
    end = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind("\n"))
    return (cut[: end + 1] if end > len(cut) // 2 else cut).strip()


def drop_repeated_sentences(text: str) -> str:
    """Keep each sentence once (compared without case or spacing): a small model loops on a sentence until its
    token cap, and a persona made from such a profile would repeat it to every predictor."""
    seen: set[str] = set()
    lines = []
    for line in text.split("\n"):
        if not line.strip():
            lines.append("")
            continue
        kept = []
        for sentence in re.split(r"(?<=[.!?])\s+", line.strip()):
            key = " ".join(sentence.lower().split())
            if key not in seen:
                seen.add(key)
                kept.append(sentence)
        if kept:
            lines.append(" ".join(kept))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class ProfileBuilder(dspy.Module):
    """Summarise episodic records into a profile.

    Args:
        chunk_size: records per LM call (bounded prompts for long histories).
        max_words: the profile's length limit, asked of the LM and enforced after.
        max_records: only the latest this many records are summarised.
        max_tokens: the LM's output cap per call; default `2 * max_words + 64`. Words past `max_words` are cut
            anyway, and small models tend to run on to the LM's own limit (the offline model: 768 tokens, over a
            minute per call on a CPU). Decoding is left to right, so a cap that covers `max_words` words only cuts
            what the clamp would cut anyway (on one real author: 768 -> 304 completion tokens).
    """

    def __init__(
        self, *, chunk_size: int = 20, max_words: int = 120, max_records: int = 200, max_tokens: int | None = None
    ) -> None:
        super().__init__()
        max_tokens = 2 * max_words + 64 if max_tokens is None else max_tokens
        for name, value in (
            ("chunk_size", chunk_size),
            ("max_words", max_words),
            ("max_records", max_records),
            ("max_tokens", max_tokens),
        ):
            validate_k(value, name)
        self.chunk_size = chunk_size
        self.max_words = max_words
        self.max_records = max_records
        self.max_tokens = max_tokens
        self.summarize = dspy.Predict(SummarizeProfile)

    def _summarize(self, records: str, existing: str) -> Steps:
        inputs = {"records": records, "existing_profile": existing, "max_words": self.max_words}
        for sampled in (False, True):
            config = {"max_tokens": self.max_tokens, **(RESAMPLE if sampled else {})}
            out = yield Predict(self.summarize, {**inputs, "config": config})
            profile = clamp_words(drop_repeated_sentences(out.profile), self.max_words)
            # What the records or the existing profile already say is the user's, not an echo.
            echo = profile_prompt().find(profile, allowed=f"{records}\n{existing}")
            if echo is None:
                return profile
            if not sampled:
                logger.warning("The profile summary echoes its prompt (%r); asking again, sampled.", echo)
        raise ProfileEchoError(echo)

    def _steps(self, records: Sequence[Interaction], existing: str | None) -> Steps:
        records = list(records)[-self.max_records :]
        chunks = [records[i : i + self.chunk_size] for i in range(0, len(records), self.chunk_size)]
        if len(chunks) == 1:  # short history: one call, merged straight into the existing profile
            profile = yield from self._summarize(format_records(chunks[0]), existing or "none")
            return dspy.Prediction(profile=profile, source_ids=[r.id for r in records])
        # map: one partial profile per chunk; reduce: merge partials (chunk_size at a time) until one is left
        partials = []
        for chunk in chunks:
            partials.append((yield from self._summarize(format_records(chunk), "none")))
        while len(partials) > 1:
            groups = [partials[i : i + self.chunk_size] for i in range(0, len(partials), self.chunk_size)]
            last = len(groups) == 1
            partials = []
            for group in groups:
                lines = "\n".join(f"- partial profile: {' '.join(p.split())}" for p in group)
                partials.append((yield from self._summarize(lines, (existing or "none") if last else "none")))
        return dspy.Prediction(profile=partials[0], source_ids=[r.id for r in records])

    def forward(self, records: Sequence[Interaction], existing: str | None = None) -> dspy.Prediction:
        if not records:
            raise InvalidInputError("records", records, "a profile needs at least one record")
        return run_sync(self._steps(records, existing))

    async def aforward(self, records: Sequence[Interaction], existing: str | None = None) -> dspy.Prediction:
        if not records:
            raise InvalidInputError("records", records, "a profile needs at least one record")
        return await run_async(self._steps(records, existing))

    def build(
        self, store: MemoryStore, user_id: str, *, before: datetime | float | None = None, task: str | None = None
    ) -> Profile:
        """Summarise the user's history (strictly before `before`) and store it as a new profile version."""
        records = store.history(user_id, before=before, task=task)
        out = self(records=records)
        return store.set_profile(user_id, out.profile, source_ids=out.source_ids)

    def needs_rebuild(self, store: MemoryStore, user_id: str, *, min_new: int = 10) -> bool:
        """True when the user has no profile or at least `min_new` interactions arrived since the last one."""
        profile = store.get_profile(user_id)
        if profile is None:
            return store.count(user_id) > 0
        return store.count(user_id) - len(profile.source_ids) >= min_new

    def maybe_rebuild(self, store: MemoryStore, user_id: str, *, min_new: int = 10) -> Profile | None:
        """Rebuild the profile if enough new interactions arrived; returns the new profile or None."""
        return self.build(store, user_id) if self.needs_rebuild(store, user_id, min_new=min_new) else None
