"""The planned mode of `PersonaAgent`: the memory actions in code, one answer call.

With a small model the ReAct loop spends ~4 calls an answer choosing the same tools every time (search
memory with the request, recall the profile) and hands memory to the answer as a text blob. Planned mode
runs that plan itself: it searches the user's memory with the request, passes the nearest past
interactions to the answer predictor as DSPy demos (earlier turns the model can copy, the most similar
last), keeps the persona as the instruction, and makes one call. For a closed label set the call goes
through `ChoiceAdapter`, and its scores meet the memory's own evidence (`persona_agent.programs.evidence`)
under the user's fitted weights; with the model's weight at 0 no call is made at all.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import dspy
from dspy.utils.exceptions import AdapterParseError

from persona_agent.programs.choice import SCORES, ChoiceAdapter
from persona_agent.programs.evidence import Evidence, is_ordinal, label_prior, neighbour_vote
from persona_agent.programs.steps import Predict, Steps
from persona_agent.signatures.tasks import labels_of
from persona_agent.stores.records import SearchHit

if TYPE_CHECKING:
    from persona_agent.programs.persona_agent import PersonaAgent

logger = logging.getLogger(__name__)

SEARCH = "search_memory"


def _request_text(agent: PersonaAgent, inputs: dict[str, Any]) -> str:
    return "\n".join(str(inputs[name]) for name in agent.task_signature.input_fields)


def neighbours(agent: PersonaAgent, inputs: dict[str, Any], before: Any) -> list[SearchHit]:
    """The user's `k` most similar earlier interactions (none without memory, or for an unknown user)."""
    if agent.store is None or SEARCH not in agent.tool_names or agent.k == 0:
        return []
    if agent.store.count(agent.user_id) == 0:
        return []
    return agent.store.search(agent.user_id, _request_text(agent, inputs), k=agent.k, before=before, task=agent.task)


def as_demos(agent: PersonaAgent, hits: list[SearchHit]) -> list[dspy.Example]:
    """Past interactions as input/output pairs of the task, most similar last (nearest the request)."""
    in_field = next(iter(agent.task_signature.input_fields))
    out_field = next(iter(agent.task_signature.output_fields))
    return [
        dspy.Example({in_field: hit.interaction.query, out_field: hit.interaction.response}) for hit in reversed(hits)
    ]


def _past_labels(agent: PersonaAgent, before: Any) -> list[str]:
    if agent.store is None or SEARCH not in agent.tool_names or agent.store.count(agent.user_id) == 0:
        return []
    return [item.response for item in agent.store.history(agent.user_id, before=before, task=agent.task)]


def planned_steps(agent: PersonaAgent, inputs: dict[str, Any], before: Any) -> Steps:
    """Search memory, then one answer call (none when the weights leave the model out)."""
    hits = neighbours(agent, inputs, before)
    trajectory = [
        {
            "thought": "planned: the request's nearest past interactions become demonstrations",
            "tool": SEARCH,
            "args": {"query": _request_text(agent, inputs)[:200], "k": agent.k},
            "observation": f"{len(hits)} past interactions",
        }
    ]
    demos = as_demos(agent, hits)
    labels = labels_of(agent.task_signature)
    out_fields = list(agent.task_signature.output_fields)
    if labels is None or len(out_fields) != 1:
        answer = yield Predict(agent.answer, {**inputs, "demos": demos})
        outputs = {name: answer[name] for name in out_fields}
        return dspy.Prediction(**outputs, trajectory=trajectory, mode="planned")
    weights = agent.evidence_weights
    lm_scores = {label: 1.0 / len(labels) for label in labels}
    if weights.lm > 0:
        try:
            answer = yield Predict(
                agent.answer, {**inputs, "demos": demos}, adapter=ChoiceAdapter(clip_words=agent.clip_words)
            )
            lm_scores = dict(answer[SCORES])
        except (AdapterParseError, ValueError) as exc:  # the memory's evidence still answers
            logger.warning("the LM gave no allowed answer (%s); answering from memory evidence", exc)
    evidence = Evidence(
        labels=tuple(labels),
        lm=lm_scores,
        vote=neighbour_vote(((h.interaction.response, h.score) for h in hits), labels),
        prior=label_prior(_past_labels(agent, before), labels),
        ordinal=is_ordinal(labels),
    )
    return dspy.Prediction(
        **{out_fields[0]: evidence.answer(weights)},
        scores=evidence.combined(weights),
        evidence=evidence.to_dict(),
        trajectory=trajectory,
        mode="planned",
    )
