"""One code path for sync and async modules: the logic is a generator that yields the steps it needs
(an LM call through a predictor, or a tool call) and receives their results; two small drivers run it
with `__call__` or `acall`. Errors of a step are thrown back into the generator at the point it yielded,
so the logic handles them in one place for both paths.

Before every LM step the drivers call the `step_guard` found in DSPy's settings, if any (a compile's
budget installs one with `dspy.context(step_guard=...)`); it raises to stop the run before the call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import dspy


@dataclass(frozen=True)
class Predict:
    """Call `module(**inputs)` (sync) or `await module.acall(**inputs)` (async), under `adapter` when given
    (a step that needs its own prompt format, e.g. `ChoiceAdapter`, without changing the caller's)."""

    module: dspy.Module
    inputs: dict[str, Any]
    adapter: dspy.Adapter | None = None


@dataclass(frozen=True)
class UseTool:
    """Call a tool with keyword arguments; sync tools run in a worker thread on the async path."""

    tool: dspy.Tool
    args: dict[str, Any]


Step = Predict | UseTool
Steps = Generator[Step, Any, Any]
STEP_GUARD = "step_guard"


def _guard(step: Step) -> None:
    guard = dspy.settings.get(STEP_GUARD)
    if guard is not None and isinstance(step, Predict):
        guard()


def _adapter(step: Predict) -> contextlib.AbstractContextManager[Any]:
    return dspy.context(adapter=step.adapter) if step.adapter is not None else contextlib.nullcontext()


def run_sync(steps: Steps) -> Any:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        _guard(step)  # outside the try: a spent budget ends the run, it is not the step's error
        try:
            if isinstance(step, Predict):
                with _adapter(step):
                    value = step.module(**step.inputs)
            else:
                value = step.tool(**step.args)
        except Exception as exc:  # handed to the logic, which decides what is fatal
            error = exc


async def run_async(steps: Steps) -> Any:
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        value, error = None, None
        _guard(step)
        try:
            if isinstance(step, Predict):
                with _adapter(step):
                    value = await step.module.acall(**step.inputs)
            else:
                value = await asyncio.to_thread(step.tool, **step.args)
        except Exception as exc:
            error = exc
