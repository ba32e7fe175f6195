"""Hand-written users, a bag-of-words embedder and a scripted LM for the runner tests.

Every item's input starts with a marker `zqNN` (NN: user digit + position) so a test can find, in any
prompt, which items it shows. The embedder hashes words of 3+ letters, so markers never affect
similarity and the nearest item of each query is fixed by the words chosen below.
"""

from __future__ import annotations

import re
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np

from persona_agent.core.records import BuildReport, EvalDataset, EvalUser, Item
from persona_agent.testing import ScriptedCall, ScriptedLM

T0 = datetime(2020, 1, 1, tzinfo=UTC)
MARKER = re.compile(r"\bzq(\d\d)\b")

# (marker, words, label, order); alice's zq05 is simultaneous with her first query and must stay hidden.
ALICE_HISTORY = [
    ("zq00", "senate vote budget", "politics", 0),
    ("zq01", "museum painting gallery", "culture & arts", 1),
    ("zq02", "senate election campaign", "politics", 2),
    ("zq03", "opera gallery concert", "culture & arts", 3),
    ("zq04", "governor signs law", "politics", 4),
    ("zq05", "sculpture museum exhibit", "culture & arts", 5),
]
ALICE_QUERIES = [
    ("zq06", "senate election debate", "politics", 5),
    ("zq07", "gallery painting auction", "culture & arts", 6),
    ("zq08", "opera concert season", "politics", 7),
]
BOB_HISTORY = [
    ("zq10", "striker goal record", "sports", 0),
    ("zq11", "marathon runners city", "sports", 1),
    ("zq12", "island beach travel", "travel", 2),
    ("zq13", "coach stadium team", "sports", 3),
]
BOB_QUERIES = [
    ("zq14", "island hotel beach", "travel", 4),
    ("zq15", "stadium coach fired", "sports", 5),
]
# By hand: majority is politics (alice) / sports (bob); nearest by shared words.
EXPECTED_MAJORITY = ["politics", "politics", "politics", "sports", "sports"]
EXPECTED_NEAREST = [
    "politics",
    "culture & arts",
    "culture & arts",
    "travel",
    "sports",
]  # via zq02, zq01, zq03, zq12, zq13


def _items(rows: list[tuple[str, str, str, int]], *, timestamps: bool) -> tuple[Item, ...]:
    return tuple(
        Item(
            id=marker,
            input=f"{marker} {words}",
            output=label,
            order=order,
            timestamp=T0 + timedelta(days=order) if timestamps else None,
        )
        for marker, words, label, order in rows
    )


def news_dataset() -> EvalDataset:
    """Two LaMP-2N users: alice with timestamps and three queries, bob without timestamps and two."""
    users = (
        EvalUser(
            user_id="alice",
            task="LaMP-2N",
            history=_items(ALICE_HISTORY, timestamps=True),
            queries=_items(ALICE_QUERIES, timestamps=True),
        ),
        EvalUser(
            user_id="bob",
            task="LaMP-2N",
            history=_items(BOB_HISTORY, timestamps=False),
            queries=_items(BOB_QUERIES, timestamps=False),
        ),
    )
    report = BuildReport(
        task="LaMP-2N",
        source="hand-written test users",
        records_read=15,
        users_seen=2,
        users_kept=2,
        items=15,
        queries=5,
    )
    return EvalDataset(task="LaMP-2N", users=users, report=report)


def ratings_dataset() -> EvalDataset:
    """One LaMP-3 user: ratings 5, 4, 4 before the queries (mean 4.333...)."""
    history = (
        Item(id="r0", input="zq20 great strings bright tone", output="5", order=0),
        Item(id="r1", input="zq21 solid stand sturdy", output="4", order=1),
        Item(id="r2", input="zq22 cable works fine", output="4", order=2),
    )
    queries = (
        Item(id="r3", input="zq23 cable crackles", output="2", order=3),
        Item(id="r4", input="zq24 bright strings", output="5", order=4),
    )
    user = EvalUser(user_id="carol", task="LaMP-3", history=history, queries=queries)
    report = BuildReport(
        task="LaMP-3", source="hand-written test users", records_read=5, users_seen=1, users_kept=1, items=5, queries=2
    )
    return EvalDataset(task="LaMP-3", users=(user,), report=report)


class WordsEmbedder:
    """Hashed bag of words (3+ letters), L2-normalised: deterministic, instant, and similarity = shared words."""

    name = "test-words"
    dim = 1024

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            out[i, 0] = 1e-3  # no all-zero rows
            for word in re.findall(r"[a-z]{3,}", text.lower()):
                out[i, 1 + zlib.crc32(word.encode()) % (self.dim - 1)] += 1.0
        return out / np.linalg.norm(out, axis=1, keepdims=True)


NEW_PERSONA = (
    "## User profile\nFiles museum and gallery pieces under culture & arts.\n\n## Agent instructions\nCheck memory."
)
REACT = "article, trajectory -> next_thought, next_tool_name, next_tool_args"
ANSWER = "article, trajectory -> category"
PROFILE = "records, existing_profile, max_words -> profile"
_RESPONSE = re.compile(r"user's response: ([a-z&\- ]+?)(?: \(similarity|\n|$)")


def _first_label(text: str) -> str | None:
    match = _RESPONSE.search(text)
    return match.group(1).strip() if match else None


def _react(call: ScriptedCall) -> dict:
    if "search_memory" in call.inputs.get("trajectory", ""):
        return {"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}}
    query = call.inputs["article"].split(" ", 1)[1]
    return {"next_thought": "look", "next_tool_name": "search_memory", "next_tool_args": {"query": query}}


def _from_context(field: str):
    def answer(call: ScriptedCall) -> dict:
        label = _first_label(call.inputs.get(field, ""))
        if label is None:
            label = "culture & arts" if "museum" in call.messages[0]["content"] else "politics"
        return {"category": label}

    return answer


def _alignment_script(persona: str, critique: str, gradient: str, prefix: str) -> dict:
    """What the three alignment strategies call (PersonaAligner, COPRO, GEPA), every proposal landing on `persona`."""
    proposal = {"proposed_instruction": persona, "proposed_prefix_for_output_field": prefix}
    return {
        "persona, request, simulated_response, ground_truth_response -> matches, critique": {
            "matches": False,
            "critique": critique,
        },
        "persona, losses -> gradient": {"gradient": gradient},
        "persona, gradient, max_chars -> new_persona": {"new_persona": persona},
        "basic_instruction -> proposed_instruction, proposed_prefix_for_output_field": proposal,
        "attempted_instructions -> proposed_instruction, proposed_prefix_for_output_field": proposal,
        "*": {"text": f"```\n{persona}\n```"},  # GEPA's reflection (a raw LM call)
    }


def news_lm(profile: str = "Writes about politics and, now and then, the arts.") -> ScriptedLM:
    """Answers every signature the runner's methods, profile builder and three strategies call."""
    return ScriptedLM(
        {
            "article -> category": {"category": "politics"},
            "article, user_history -> category": _from_context("user_history"),
            "article, user_profile, user_history -> category": _from_context("user_history"),
            REACT: _react,
            ANSWER: _from_context("trajectory"),
            PROFILE: {"profile": profile},
            **_alignment_script(
                NEW_PERSONA,
                critique="The user files gallery pieces under culture & arts.",
                gradient="- add: museum and gallery pieces are culture & arts",
                prefix="Category:",
            ),
        }
    )


def ratings_lm() -> ScriptedLM:
    """Answers every LaMP-3 signature: 4 without context, else the first past rating the context shows."""

    def rating(field: str):
        def answer(call: ScriptedCall) -> dict:
            found = re.search(r"user's response: ([1-5])", call.inputs.get(field, ""))
            return {"rating": found.group(1) if found else "4"}

        return answer

    def react(call: ScriptedCall) -> dict:
        if "search_memory" in call.inputs.get("trajectory", ""):
            return {"next_thought": "enough", "next_tool_name": "finish", "next_tool_args": {}}
        query = call.inputs["review"].split(" ", 1)[1]
        return {"next_thought": "look", "next_tool_name": "search_memory", "next_tool_args": {"query": query}}

    return ScriptedLM(
        {
            "review -> rating": {"rating": "4"},
            "review, user_history -> rating": rating("user_history"),
            "review, user_profile, user_history -> rating": rating("user_history"),
            "review, trajectory -> next_thought, next_tool_name, next_tool_args": react,
            "review, trajectory -> rating": rating("trajectory"),
            PROFILE: {"profile": "Rates gear 4 or 5; strings get 5."},
            **_alignment_script(
                "## User profile\nRates strings 5 and cables 4.\n\n## Agent instructions\nCheck memory.",
                critique="The user gives strings 5.",
                gradient="- add: strings get 5",
                prefix="Rating:",
            ),
        }
    )


def markers(text: str) -> set[str]:
    return {f"zq{m}" for m in MARKER.findall(text)}


def call_text(call: ScriptedCall) -> str:
    return "\n".join(m["content"] for m in call.messages)
