"""The small-LM guard: what every strategy holds a proposed persona to before it can win or go live.

A small LM hands back a persona with its sections lost, its template variables dropped, far over length,
wrapped in a code fence, or its optimizer's own prompt instead of a persona (`programs.prompt_echo`).
`PersonaGuard` is that check in one object: `constrain` is PersonaAligner's structural constraints (the two
sections, the template variables, the length cap, and no echo of PersonaAligner's own prompt); `hold` first
rejects an echo of the strategy's prompt (GEPA's reflection, COPRO's proposal prompt); `check` is what a
strategy's returned persona is told (`persona_check`); `proposals` filters a search's proposals.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from persona_agent.programs.persona import INSTRUCTIONS_HEADING, PROFILE_HEADING, Persona, persona_sections
from persona_agent.programs.prompt_echo import PromptEcho, aligner_prompt

logger = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*\}")


def _unwrap(proposed: str) -> str:
    """The text inside a code fence or a pair of quotes wrapped around the whole proposal (an LM's habit);
    a fence or quote that only ends the text is part of it."""
    text = proposed.strip()
    fenced = re.fullmatch(r"```[\w-]*\n(.*?)\n?```", text, flags=re.S)
    if fenced:
        text = fenced.group(1).strip()
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text


def _subheadings(text: str, keep: tuple[str, ...] = ()) -> str:
    """Demote each `## ` line not named in `keep` to `### `, so it cannot start a persona section."""
    lines = text.splitlines()
    return "\n".join(f"#{ln}" if ln.startswith("## ") and ln[3:].strip() not in keep else ln for ln in lines)


@dataclass(frozen=True)
class PersonaGuard:
    """The persona constraints (`max_persona_chars`) and, when given, the strategy's own prompt (`echo`)."""

    max_persona_chars: int = 2000
    echo: PromptEcho | None = None

    def constrain(self, current: str, proposed: str) -> tuple[str | None, str]:
        """Hold a proposed persona to the two-part structure, the template variables and the length cap,
        and reject one that echoes the aligner's own prompt (`aligner_prompt`). Returns (text or None if it
        must be rejected, note). Idempotent: a text it returns passes again as is.

        Any other `## ` heading becomes a `### ` subheading of the section it is in: its text is kept, and
        it cannot split a section when the persona is read again."""
        text = _unwrap(proposed)
        if not text:
            return None, "empty update"
        echoed = aligner_prompt().note(text, allowed=current)
        if echoed:
            return None, echoed
        profile_key, instr_key = PROFILE_HEADING[3:], INSTRUCTIONS_HEADING[3:]
        old, new = persona_sections(current), persona_sections(_subheadings(text, keep=(profile_key, instr_key)))
        note = "ok"
        if profile_key not in new and instr_key not in new:  # a bare rewrite: take it as the profile
            new = {profile_key: text, instr_key: old.get(instr_key, "")}
            note = "no headings: kept as profile, instructions unchanged"
        else:
            for key in (profile_key, instr_key):
                if not new.get(key):
                    new[key] = old.get(key, "")
                    note = f"missing '{key}' section restored"
        instructions = _subheadings(new[instr_key].strip())
        budget = self.max_persona_chars - len(PROFILE_HEADING) - len(INSTRUCTIONS_HEADING) - len(instructions) - 4
        profile = _subheadings(new[profile_key].strip())
        if budget < 40:
            return None, "instructions alone exceed the length cap"
        if len(profile) > budget:
            cut = profile[:budget]
            end = cut.rfind(". ")
            profile = cut[: end + 1] if end > budget // 2 else cut.rstrip()
            note = "profile shortened to the length cap"
        result = f"{PROFILE_HEADING}\n{profile}\n\n{INSTRUCTIONS_HEADING}\n{instructions}"
        lost = set(_PLACEHOLDER.findall(current)) - set(_PLACEHOLDER.findall(result))
        if lost:
            return None, f"template variables lost: {sorted(lost)}"
        return result, note

    def hold(self, initial: str, proposed: str) -> tuple[str | None, str]:
        """`constrain`, after rejecting a text that echoes the strategy's own prompt."""
        echoed = self.echo.note(proposed, allowed=initial) if self.echo is not None else None
        return (None, echoed) if echoed else self.constrain(initial, proposed)

    def check(self, initial: Persona, final: Persona, strategy: str) -> str:
        """What the guard says of the persona a strategy returned: "ok", or what breaks.

        Under `constrain=False` a strategy returns what its search found; the check goes in the trace and a
        warning, so nobody serves such a persona unawares. Under `constrain=True` it is "ok" by construction."""
        if final.text == initial.text:
            return "ok"
        text, note = self.hold(initial.text, final.text)
        if text is not None and note == "ok":
            return "ok"
        note = f"{'would be rejected' if text is None else 'would be repaired'}: {note}"
        logger.warning(
            "%s persona for user %s (%d chars) fails PersonaAligner's checks: it %s",
            strategy,
            final.user_id,
            len(final.text),
            note,
        )
        return note

    def proposals(self, initial: str, enabled: bool) -> Proposals:
        """A filter for one search's proposals against the persona it started from (off: as published)."""
        return Proposals(self, initial, enabled)


class Proposals:
    """Holds proposals to the guard against the persona the search started from, and keeps a note for each
    distinct proposal (for the trace). A rejected proposal becomes the start persona, so it can never win."""

    def __init__(self, guard: PersonaGuard, initial: str, enabled: bool) -> None:
        self.guard, self.initial, self.enabled = guard, initial, enabled
        self.notes: dict[str, str] = {}

    def __deepcopy__(self, memo: dict) -> Proposals:
        return self  # COPRO deep-copies the program it searches; every copy must report to the same notes

    def __call__(self, proposed: str) -> str:
        if not self.enabled or proposed == self.initial:
            return proposed
        text, note = self.guard.hold(self.initial, proposed)
        if proposed not in self.notes:
            self.notes[proposed] = note if text is not None else f"rejected: {note}"
        return self.initial if text is None else text

    def trace(self) -> list[dict[str, Any]]:
        return [{"proposed_chars": len(p), "note": n} for p, n in self.notes.items()]
