"""`ChoiceAdapter`: answers from a closed set, scored by the model's own probabilities.

For a signature whose single output is one of known labels (a category, a tag, a rating), asking a
small model to *write* the answer under a JSON schema spends tokens on syntax and can run to the cap.
This adapter instead shows the task as plain chat turns (the demos as earlier user/assistant turns with
the bare label as the reply, the instruction and the allowed labels in the system message) and asks for
the label alone, a few tokens at most. With token log-probabilities (llama.cpp, OpenAI-compatible
servers) the first token's top alternatives become a distribution over the labels (`scores` on the
prediction); without them the parsed label gets all the mass. One LM call either way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from persona_agent.signatures.tasks import labels_of

SCORES = "scores"
TOP_LOGPROBS = 20  # OpenAI's and llama.cpp's maximum; enough to cover every label's first token


def _clip(text: str, words: int | None) -> str:
    if words is None:
        return text
    parts = text.split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def match_label(text: str, labels: Sequence[str]) -> str | None:
    """The label `text` names: an exact (case-insensitive) match, else the longest label it starts with,
    else the only label that starts with it."""
    said = " ".join(text.strip().strip("\"'`.").split()).lower()
    if not said:
        return None
    by_lower = {label.lower(): label for label in labels}
    if said in by_lower:
        return by_lower[said]
    prefixes = [label for label in labels if said.startswith(label.lower())]
    if prefixes:
        return max(prefixes, key=len)
    extensions = [label for label in labels if label.lower().startswith(said)]
    return extensions[0] if len(extensions) == 1 else None


def label_scores(top: Sequence[dict[str, Any]], labels: Sequence[str]) -> dict[str, float] | None:
    """A distribution over `labels` from the first generated token's top alternatives.

    Each alternative's probability goes to the labels its text starts (split evenly when several labels
    share that start, e.g. `dark comedy` and `dystopia` after a bare `d`); alternatives that start no
    label are dropped and the rest renormalised. None when no alternative starts a label."""
    mass = dict.fromkeys(labels, 0.0)
    for alt in top:
        token = str(alt.get("token", "")).strip().lower()
        if not token:
            continue
        hits = [label for label in labels if label.lower().startswith(token) or token.startswith(label.lower())]
        for label in hits:
            mass[label] += math.exp(float(alt["logprob"])) / len(hits)
    total = sum(mass.values())
    if total <= 0.0:
        return None
    return {label: value / total for label, value in mass.items()}


class ChoiceAdapter(dspy.Adapter):
    """Plain-turn prompts and label scoring for single-output closed-set signatures.

    Args:
        clip_words: inputs (the request and every demo's) are cut to this many words; prompt tokens are
            what a CPU pays for, and a label rarely needs more than the opening of a text.
        max_tokens: the generation budget; a label is a few tokens, so a reply never runs long.
    """

    def __init__(self, *, clip_words: int | None = 80, max_tokens: int = 8) -> None:
        super().__init__()
        self.clip_words = clip_words
        self.max_tokens = max_tokens

    @staticmethod
    def labels(signature: type[dspy.Signature]) -> tuple[str, ...]:
        labels = labels_of(signature)
        if labels is None or len(signature.output_fields) != 1:
            raise TypeError(f"ChoiceAdapter needs one output field with a closed label set, got {signature.__name__}")
        return labels

    def _user(self, signature: type[dspy.Signature], values: dict[str, Any]) -> str:
        names = list(signature.input_fields)
        if len(names) == 1:
            return _clip(str(values[names[0]]), self.clip_words)
        return "\n".join(f"{name}: {_clip(str(values[name]), self.clip_words)}" for name in names)

    def format(
        self, signature: type[dspy.Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        labels = self.labels(signature)
        output = next(iter(signature.output_fields))
        system = (
            f"{signature.instructions.strip()}\n\n"
            f"Allowed answers: {', '.join(labels)}.\nReply with the {output} only: one of the allowed answers."
        )
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        for demo in demos:
            if all(name in demo for name in signature.input_fields) and demo.get(output) is not None:
                messages.append({"role": "user", "content": self._user(signature, demo)})
                messages.append({"role": "assistant", "content": str(demo[output])})
        messages.append({"role": "user", "content": self._user(signature, inputs)})
        return messages

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        labels = self.labels(signature)
        label = match_label(completion.splitlines()[0] if completion.strip() else "", labels)
        if label is None:
            raise AdapterParseError(
                adapter_name=type(self).__name__,
                signature=signature,
                lm_response=completion[:200],
                message=f"the reply is none of the allowed answers {list(labels)}",
            )
        return {next(iter(signature.output_fields)): label}

    def _lm_kwargs(self, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"max_tokens": self.max_tokens, "logprobs": True, "top_logprobs": TOP_LOGPROBS, **lm_kwargs}

    def _value(self, signature: type[dspy.Signature], output: Any) -> dict[str, Any]:
        """The label and its distribution for one LM output. The first token's alternatives decide (the
        label follows from them, so an odd or cut reply still yields the most probable allowed answer);
        without log-probabilities the parsed reply gets all the mass."""
        labels = self.labels(signature)
        text = (output.get("text") if isinstance(output, dict) else output) or ""
        content = ((output.get("logprobs") or {}).get("content") if isinstance(output, dict) else None) or []
        scores = label_scores(content[0].get("top_logprobs") or [content[0]], labels) if content else None
        if scores is None:
            label = self.parse(signature, text)[next(iter(signature.output_fields))]
            scores = {name: float(name == label) for name in labels}
        return {next(iter(signature.output_fields)): max(scores, key=scores.__getitem__), SCORES: scores}

    def __call__(
        self,
        lm: dspy.BaseLM,
        lm_kwargs: dict[str, Any],
        signature: type[dspy.Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        outputs = lm(messages=self.format(signature, demos, inputs), **self._lm_kwargs(lm_kwargs))
        return [self._value(signature, out) for out in outputs]

    async def acall(
        self,
        lm: dspy.BaseLM,
        lm_kwargs: dict[str, Any],
        signature: type[dspy.Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        outputs = await lm.acall(messages=self.format(signature, demos, inputs), **self._lm_kwargs(lm_kwargs))
        return [self._value(signature, out) for out in outputs]
