"""One user's part of a run, in one worker thread: memory, profile, personas, then every (method, query) row.

Per user (each step for a reason):
1. Memory: a fresh store holding only `profile_before(first query)`. Later queries of the same user use
   the same memory with `as_of` = their own time, so nothing at or after a query is ever visible, and the
   earlier queries' answers are not added (the builders' split: queries are the latest items).
2. Profile (semantic memory), built once from that memory; the initial persona is made from it.
3. Alignment, once per user and strategy, on the n items just before the first query
   (`first_alignment_batch`), each simulated at its own time, under an LM-call budget. A failed alignment
   falls back to the initial persona, with its error in the set-up row.
4. Up to `queries` queries answered by every method, one results row per (method, user, query), with
   the prediction, gold, LM calls, tokens, seconds and any error.
The profile and personas are cached per user (`StateCache`), so a resumed run does not redo them. When that
cache is gone (it is never committed) they are rebuilt with a warning, and the profile row's `profile_sha`
lets the report tell a rebuilt profile the LM wrote differently from the first. When the log lost the row of
the cached build (cut after it was built), the row is written again from the cache.

Steps 1-3 live in `user_setup.UserSetup`, what the worker threads share in `run_state.RunState`; this module
answers (step 4).
"""

from __future__ import annotations

import time

from persona_agent.core.records import EvalUser, Item
from persona_agent.core.usage import track_usage
from persona_agent.evaluation.floors import majority_prediction, median_rating, nearest_label
from persona_agent.evaluation.persist import Row
from persona_agent.evaluation.plan import MethodSpec
from persona_agent.evaluation.run_state import RunState, describe, fatal, item_time, usage_fields
from persona_agent.evaluation.user_setup import UserSetup

__all__ = ["UserRun"]


class UserRun:
    """One user's work (see the module docstring); call it to run."""

    def __init__(self, run: RunState, user: EvalUser, work: list[tuple[MethodSpec, Item]]) -> None:
        self.run = run
        self.user = user
        self.work = work
        self.setup = run.setup
        self.prep = UserSetup(run, user)  # memory, profile, personas, programs

    def _answer(self, spec: MethodSpec, query: Item) -> Row:
        as_of = item_time(query)
        visible = [it for it in self.prep.items if it.order < query.order]
        program = None if spec.is_floor else self.prep.method(spec)  # setup cost is not the example's
        self.run.status(f"{self.user.key} · {spec.name}")
        tools: list[str] = []
        mode = None
        started = time.perf_counter()
        with track_usage() as meter:
            try:
                if spec.name == "majority":
                    prediction = majority_prediction(self.setup.task, visible)
                elif spec.name == "median":
                    prediction = median_rating(visible)
                elif spec.name == "nearest":
                    prediction = nearest_label(self.prep.store, self.user.user_id, query.input, as_of)
                else:
                    out = program(**{self.setup.input_field: query.input}, as_of=as_of)
                    prediction = str(out[self.setup.output_field])
                    tools = [str(step.get("tool")) for step in (out.get("trajectory") or [])]
                    mode = out.get("mode")
                error = None
            except Exception as exc:
                if fatal(exc):
                    raise
                prediction, error = None, describe(exc)
        seconds = time.perf_counter() - started
        return {
            "kind": "prediction",
            "task": self.setup.task.name,
            "method": spec.name,
            "user": self.user.key,  # not the dataset id: results are committed, the data is not
            "query_id": query.id,
            "query_index": self.user.queries.index(query),  # no timestamp, for the same reason
            "memory_items": len(visible),
            "gold": query.output,
            "prediction": prediction,
            "error": error,
            "tools": tools,
            "mode": mode,  # the agent's mode as resolved for this answer (react or planned); None for others
            **usage_fields(meter.report()),
            "seconds": round(seconds, 3),
        }

    def __call__(self) -> None:
        if self.run.stop.is_set():
            return
        started, failed = time.perf_counter(), 0
        try:
            if any(spec.needs_memory for spec, _ in self.work):
                self.prep.open_memory()
            if any(spec.needs_profile for spec, _ in self.work):
                self.prep.build_profile()
            for spec, query in self.work:
                if self.run.stop.is_set():
                    return
                row = self._answer(spec, query)
                failed += row["error"] is not None
                self.run.record(row, example=True)
            self.run.user_done(self.user.key, len(self.work), failed, time.perf_counter() - started)
        finally:
            self.prep.close()
