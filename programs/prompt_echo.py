"""Whether a proposed persona (or a built profile) is the prompt that asked for it, handed back.

Asked to rewrite an instruction, a small LM sometimes returns the request itself. The evaluation has
three cases: GEPA's reflection prompt with its examples and feedback (LaMP-2M user 4), the examples
block of it alone (LaMP-2N user 8), and COPRO's list of attempts and their scores (LaMP-2M user 16).
Such a text describes no user. PersonaAligner's structural constraints would keep it as the profile, so
the strategies test for it separately.

PersonaAligner's own update prompt is held to the same test (`aligner_prompt`): under the paper's
accept="always" an echoed update would otherwise go live unscored. So is ProfileBuilder's summary
(`profile_prompt`): LaMP-2N user 6's built profile was SummarizeProfile's own instructions.

The test is verbatim: a run of `RUN` consecutive words from the prompt's fixed text, or a label the
optimizer writes into its prompt (COPRO's "Resulting Score #2:", GEPA's "# Example 2" heading). A
persona may quote a phrase or two of an instruction; eight words in a row from the meta-prompt is an
echo. What the current persona already says (`allowed`) is never an echo: a user may write any text
into their own persona.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

RUN = 8
_WORD = re.compile(r"[a-z0-9']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class PromptEcho:
    """The fixed text of one optimizer's meta-prompt, as runs of `RUN` words, plus its labels (regexes).

    `pieces` are the prompt's fixed parts: a run never spans two pieces, because a template variable sits
    between them in the real prompt."""

    name: str
    pieces: Sequence[str]
    labels: Sequence[str] = ()
    _runs: frozenset[tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _labels: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        runs = {tuple(w[i : i + RUN]) for w in map(_words, self.pieces) for i in range(len(w) - RUN + 1)}
        object.__setattr__(self, "_runs", frozenset(runs))
        object.__setattr__(self, "_labels", tuple(re.compile(p) for p in self.labels))

    def find(self, text: str, allowed: str = "") -> str | None:
        """The echoed passage (a label, or `RUN` words) that starts first in `text` and that `allowed` does
        not contain, or None."""
        hits = []  # (where it starts, the passage)
        for label in self._labels:
            hit = label.search(text)
            if hit and not label.search(allowed):
                hits.append((hit.start(), hit.group(0)))
        words, kept = list(_WORD.finditer(text.lower())), _words(allowed)
        kept_runs = {tuple(kept[i : i + RUN]) for i in range(len(kept) - RUN + 1)}
        for i in range(len(words) - RUN + 1):
            run = tuple(w.group(0) for w in words[i : i + RUN])
            if run in self._runs and run not in kept_runs:
                hits.append((words[i].start(), " ".join(run)))
                break
        return min(hits)[1] if hits else None

    def note(self, text: str, allowed: str = "") -> str | None:
        """The note for the trace, "echoes <name> (<passage>)", or None when `text` does not echo it."""
        passage = self.find(text, allowed)
        return None if passage is None else f"echoes {self.name} ({passage!r})"


def gepa_reflection_prompt(sample_keys: Sequence[str] = (), feedback: str | None = None) -> PromptEcho:
    """GEPA's default reflection prompt (the one its `StatelessReflectionLM` sends), split at its variables,
    and what gepa writes around the examples it fills `<side_info>` with: a "# Example 1" heading per
    example and a "## <key>" heading per key of a reflective record (`sample_keys`, the adapter's own),
    plus the fixed start of the adapter's feedback text (`feedback`). The headings are labels: an LM that
    hands back only the examples block copies them, and no run of the template."""
    from gepa.strategies.instruction_proposal import InstructionProposalSignature

    pieces = re.split(r"<curr_param>|<side_info>", InstructionProposalSignature.default_prompt_template)
    labels = [r"(?m)^# Example \d+[ \t]*$"]
    if sample_keys:
        labels.append(rf"(?m)^## (?:{'|'.join(map(re.escape, sample_keys))})[ \t]*$")
    if feedback:
        labels.append(re.escape(feedback))
    return PromptEcho("GEPA's reflection prompt", tuple(pieces), labels=tuple(labels))


def copro_prompt() -> PromptEcho:
    """COPRO's two proposal signatures (instructions and field descriptions), and the labels it puts on
    each attempt it shows the LM ("Instruction #1:", "Prefix #1:", "Resulting Score #1:")."""
    from dspy.teleprompt.copro_optimizer import BasicGenerateInstruction, GenerateInstructionGivenAttempts

    return PromptEcho(
        "COPRO's prompt",
        tuple(_signature_texts((BasicGenerateInstruction, GenerateInstructionGivenAttempts))),
        labels=(r"(?:Instruction|Prefix|Resulting Score) #\d+:",),
    )


@cache
def aligner_prompt() -> PromptEcho:
    """PersonaAligner's loss, gradient and update signatures, and the labels of the losses it numbers
    for the gradient ("agent said:", "user wanted:"; `PersonaAligner._gradient_and_update` writes them)."""
    from persona_agent.signatures.alignment import PersonaEdit, PersonaGradient, PersonaUpdate, TextualLoss

    return PromptEcho(
        "PersonaAligner's prompt",
        tuple(_signature_texts((TextualLoss, PersonaGradient, PersonaUpdate, PersonaEdit))),
        labels=(r"\bagent said:", r"\buser wanted:"),
    )


@cache
def profile_prompt() -> PromptEcho:
    """ProfileBuilder's SummarizeProfile signature: its instructions and field descriptions."""
    from persona_agent.signatures.profile import SummarizeProfile

    return PromptEcho("the profile prompt", tuple(_signature_texts((SummarizeProfile,))))


def _signature_texts(signatures: Iterable[type]) -> Iterable[str]:
    for signature in signatures:
        yield signature.instructions
        for info in signature.fields.values():
            desc = (info.json_schema_extra or {}).get("desc")
            if isinstance(desc, str) and not desc.startswith("${"):  # DSPy's placeholder for an unset desc
                yield desc
