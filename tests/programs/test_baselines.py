"""Every baseline and ablation runs on the same example and returns a typed output; each sees only
its user's past, before the cut-off."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import dspy
import pytest

from persona_agent.core.errors import InvalidInputError
from persona_agent.programs import METHODS, MemBank, PersonaAgent, init_persona, make_method
from persona_agent.programs.persona import GENERIC_INSTRUCTIONS
from persona_agent.signatures import LAMP_2N_CATEGORIES, CategorizeArticle
from persona_agent.testing import ScriptedLM

from .conftest import T0

CUTOFF = T0 + timedelta(days=2)  # alice's first two rows (both politics) are visible


def scripted_lm() -> ScriptedLM:
    steps = [
        {"next_thought": "look", "next_tool_name": "search_memory", "next_tool_args": {"query": "vote"}},
        {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
    ]

    def react(call):
        return steps[0] if "search_memory" not in call.inputs["trajectory"] else steps[1]

    return ScriptedLM(
        {
            "article, trajectory -> next_thought, next_tool_name, next_tool_args": react,
            "*": {"category": "politics"},
        }
    )


@pytest.mark.parametrize("name", METHODS)
def test_every_method_answers_with_a_typed_label(store, name):
    persona = init_persona("alice", "Covers politics.")
    method = make_method(name, CategorizeArticle, store=store, user_id="alice", persona=persona)
    lm = scripted_lm()
    with dspy.context(lm=lm):
        out = method(article="The senate votes on the budget", as_of=CUTOFF)
        out_async = asyncio.run(method.acall(article="The senate votes on the budget", as_of=CUTOFF))
    assert out.category in LAMP_2N_CATEGORIES
    assert out_async.category == out.category
    prompts = "\n".join(m["content"] for call in lm.calls for m in call.messages)
    assert "bob" not in prompts.lower() and "Championship final" not in prompts  # bob's rows never leak
    assert "Star striker" not in prompts and "bakery" not in prompts  # nothing at/after the cut-off


def test_context_methods_show_the_users_past(store):
    lm = ScriptedLM({"*": {"category": "politics"}})
    with dspy.context(lm=lm):
        for name in ("icl", "rag", "pag", "membank"):
            make_method(name, CategorizeArticle, store=store, user_id="alice")(article="A vote", as_of=CUTOFF)
    for call in lm.calls:
        text = "\n".join(m["content"] for m in call.messages)
        assert "Senate passes the infrastructure bill" in text


def test_ablations_differ_in_exactly_one_part(store):
    persona = init_persona("alice", "Covers politics.")
    build = lambda name: make_method(name, CategorizeArticle, store=store, user_id="alice", persona=persona)  # noqa: E731
    full, no_mem, no_act, no_pers, react = (
        build(n) for n in ("persona_agent", "no_memory", "no_action", "no_persona", "react")
    )
    assert isinstance(full, PersonaAgent) and full.persona == persona
    assert set(full.tool_names) == {"search_memory", "recall_profile"}  # updates are off in comparisons
    assert no_mem.tool_names == () and no_mem.persona.text == persona.text  # no knowledge base here
    assert no_act.tool_names == () and not no_act.use_actions
    assert "User profile" in no_pers.persona.text and "Covers politics" not in no_pers.persona.text
    assert react.persona is None and react.tool_names == full.tool_names
    assert react.respond.signature.instructions.startswith(GENERIC_INSTRUCTIONS)


def test_membank_forgets_old_memories(store):
    # Two equally relevant memories: the older one is ranked lower when strength is short.
    store.add_interaction(
        "alice",
        "Senate passes the infrastructure bill after a long night",
        "politics",
        created_at=T0 + timedelta(days=400),
    )
    bank = MemBank(CategorizeArticle, store=store, user_id="alice", k=1, strength_days=30)
    recalled = bank.recall("Senate passes the infrastructure bill", as_of=T0 + timedelta(days=401))
    assert recalled[0].created_at == T0 + timedelta(days=400)


def test_unknown_method_or_missing_persona(store):
    with pytest.raises(InvalidInputError, match="method"):
        make_method("magic", CategorizeArticle, store=store, user_id="alice")
    with pytest.raises(InvalidInputError, match="persona"):
        make_method("persona_agent", CategorizeArticle, store=store, user_id="alice")
