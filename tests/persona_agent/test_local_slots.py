"""The local model's slots: the setting reaches the engine and survives a save, a bad count is refused, and
(marked slow: the real model) concurrent callers on several slots each get their own answer, with prefix reuse."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest

from persona_agent.core.config import Settings
from persona_agent.core.errors import InvalidInputError
from persona_agent.core.usage import track_usage
from persona_agent.lm.engine import LlamaEngine
from persona_agent.lm.models import local_engines, make_lm
from persona_agent.lm.runtime import RuntimeOptions, unload_all
from tests.persona_agent.test_local_model import gguf_bytes

WORDS = ["apple", "violin", "glacier", "lantern"]


def test_the_slots_setting_reaches_the_engine_and_its_saved_state(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(gguf_bytes())  # a well-formed header, never loaded: engines load at their first call
    engine, _ = local_engines(f"gguf:{model}", settings=Settings(local_slots=3))
    assert engine.options.slots == 3 and engine.dump_state()["slots"] == 3
    assert LlamaEngine.load_state(engine.dump_state()).options == engine.options
    assert local_engines(f"gguf:{model}", settings=Settings())[0].options.slots == 1  # the default: one slot
    with pytest.raises(InvalidInputError) as info:
        RuntimeOptions(slots=0)
    assert info.value.field == "slots"


@pytest.mark.slow
def test_concurrent_callers_on_two_slots_each_get_their_own_answer():
    pytest.importorskip("xllamacpp")
    unload_all()
    lm = make_lm("local", settings=Settings(local_slots=2), cache=False)
    barrier = threading.Barrier(len(WORDS))

    def echo(word: str) -> tuple[str, int]:
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()), track_usage() as usage:
            barrier.wait()  # all four at once: two run, two wait for a slot
            answer = dspy.Predict("word -> repeated_word")(word=word).repeated_word
        return answer, usage.report().cached_prompt_tokens

    try:
        with ThreadPoolExecutor(max_workers=len(WORDS)) as pool:
            first = list(pool.map(echo, WORDS))
            second = list(pool.map(echo, WORDS))
    finally:
        unload_all()
    assert [answer.strip().lower() for answer, _ in first] == WORDS
    assert [answer.strip().lower() for answer, _ in second] == WORDS
    assert all(cached > 0 for _, cached in second)  # each slot kept the shared instructions' prefix
