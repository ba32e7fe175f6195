"""Alignment batches: a user's latest interactions as `dspy.Example`s with ground truth."""

from __future__ import annotations

from datetime import datetime

import dspy

from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.records import Interaction

AS_OF = "as_of"


def example_from_interaction(item: Interaction, signature: type[dspy.Signature]) -> dspy.Example:
    """Map a stored interaction onto a task signature: query -> first input, response -> first output.

    The example carries `as_of` = the interaction's time, so simulating it can only see memory from
    strictly before it (never the interaction itself, which would leak the ground truth)."""
    in_field = next(iter(signature.input_fields))
    out_field = next(iter(signature.output_fields))
    return dspy.Example({in_field: item.query, out_field: item.response, AS_OF: item.created_at}).with_inputs(in_field)


def trainset_from_store(
    store: MemoryStore,
    user_id: str,
    signature: type[dspy.Signature],
    *,
    n: int = 3,
    before: datetime | float | None = None,
    task: str | None = None,
) -> list[dspy.Example]:
    """The user's latest `n` interactions (strictly before `before`), oldest first, as examples."""
    return [example_from_interaction(i, signature) for i in store.latest(user_id, n, before=before, task=task)]
