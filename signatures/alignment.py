"""Test-time persona alignment, in TextGrad's vocabulary: a loss in words per example, a gradient in
words for the batch, and an optimizer step that rewrites the persona under constraints.

The paper (arXiv 2506.06254) does not publish its prompts; these are ours. Choices:
- the loss judges the *user's* preference (ground truth is what this user actually wanted), not
  generic quality, and states match/mismatch explicitly so an all-match batch can skip the update;
- the gradient attributes mismatches to parts of the persona (profile facts vs. agent instructions)
  and proposes edits, without rewriting anything itself;
- the update keeps the two-part structure, a length cap and any {template} variables, and may leave
  the persona unchanged when the gradient does not warrant a change (LangMem's "decide first");
- `PersonaEdit` is the same step for small models, which tend to copy a persona back unchanged when
  asked to rewrite it (measured with the offline 1.5B model): it asks only for statements to add and
  sentences to remove, and the code applies them.
"""

from __future__ import annotations

import dspy


class TextualLoss(dspy.Signature):
    """Compare the agent's simulated response with the response this user actually gave. Say whether
    they match (same label/rating, or the same substance and style for free text), and if not, state
    concisely what the user evidently wanted that the simulated response missed, as a preference of
    this user that the persona should capture."""

    persona: str = dspy.InputField(desc="the persona the agent followed")
    request: str = dspy.InputField(desc="what the user asked")
    simulated_response: str = dspy.InputField(desc="the agent's response under the persona")
    ground_truth_response: str = dspy.InputField(desc="the response this user actually gave or wanted")
    matches: bool = dspy.OutputField(desc="true if the simulated response matches the user's")
    critique: str = dspy.OutputField(desc="one or two sentences: the user's preference the agent missed")


class PersonaGradient(dspy.Signature):
    """You are given a persona (a user profile plus agent instructions) and critiques of responses an
    agent produced under it for this user's recent requests. Explain which parts of the persona caused
    the mismatches and list specific edits: facts about the user's preferences to add or correct in the
    profile, and instructions to add, change or remove. Only propose edits that the critiques support."""

    persona: str = dspy.InputField()
    losses: str = dspy.InputField(desc="numbered critiques: request, simulated vs. actual response, critique")
    gradient: str = dspy.OutputField(desc="the edits to make to the persona, as a short list")


class PersonaUpdate(dspy.Signature):
    """Rewrite the persona by applying the proposed edits. Keep its two sections, '## User profile' and
    '## Agent instructions', keep every {placeholder} exactly as written, keep what is still right,
    stay within the character limit, and write the complete new persona (no commentary)."""

    persona: str = dspy.InputField(desc="the current persona")
    gradient: str = dspy.InputField(desc="the edits to apply")
    max_chars: int = dspy.InputField(desc="the new persona must not exceed this many characters")
    new_persona: str = dspy.OutputField(desc="the complete rewritten persona")


class PersonaEdit(dspy.Signature):
    """Turn the proposed edits into concrete changes to the persona's user profile: new short
    statements about this user's preferences to add, and sentences of the current profile that are
    wrong and must be removed (copied exactly). Add only what the edits support; add nothing if the
    edits ask for no change."""

    persona: str = dspy.InputField(desc="the current persona")
    gradient: str = dspy.InputField(desc="the edits to apply")
    add: list[str] = dspy.OutputField(desc="new statements about the user, each one short sentence")
    remove: list[str] = dspy.OutputField(desc="sentences of the current profile to delete, copied exactly")
