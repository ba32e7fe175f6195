"""Semantic memory: summarising a user's episodic records into a stable profile."""

from __future__ import annotations

import dspy


class SummarizeProfile(dspy.Signature):
    """Summarise what these past interactions reveal about the user's stable, long-term preferences:
    topics, tastes, the labels or ratings they tend to give and when, and their style. Write short
    factual statements grounded in the records (no speculation, no list of the records themselves).
    If an existing profile is given, merge the new evidence into it."""

    records: str = dspy.InputField(desc="the user's past interactions, one per line: request -> response")
    existing_profile: str = dspy.InputField(desc="the profile so far, or 'none'")
    max_words: int = dspy.InputField(desc="the profile must not exceed this many words")
    profile: str = dspy.OutputField(desc="the user's profile as short statements")
