"""Planned mode, demos from memory, and the log-probability path (issue 39), on a real memory store and a
fake engine that speaks DSPy's engine protocol and returns token log-probabilities as llama.cpp does."""

from __future__ import annotations

import math
from datetime import timedelta

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart, TokenLogprob, TopLogprob, Usage
from dspy.utils.exceptions import AdapterParseError

from persona_agent.core.errors import InvalidInputError
from persona_agent.lm.engine import LlamaEngine
from persona_agent.programs.choice import ChoiceAdapter, label_scores, match_label
from persona_agent.programs.evidence import EvidenceWeights, default_weights
from persona_agent.programs.persona_agent import PersonaAgent, resolve_mode
from persona_agent.signatures.tasks import CategorizeArticle, PersonalizedRequest, labels_of
from persona_agent.testing import ScriptedLM
from tests.programs.conftest import T0


class LogprobEngine:
    """Replies `text`; its first token's alternatives are `top` (token -> probability). Records requests."""

    supports_response_schema = True
    supports_function_calling = False
    supports_reasoning = False
    supported_params = frozenset({"temperature", "max_tokens", "logprobs", "stop"})

    def __init__(self, text: str, top: dict[str, float] | None) -> None:
        self.text, self.top, self.requests = text, top, []

    def complete(self, request):
        self.requests.append(request)
        logprobs = None
        if self.top is not None and request.config.logprobs is not None:
            alts = tuple(TopLogprob(token=t, logprob=math.log(p)) for t, p in self.top.items())
            first = max(self.top, key=self.top.get)
            logprobs = (TokenLogprob(token=first, logprob=math.log(self.top[first]), top=alts),)
        return Response(
            id="r",
            model=request.model,
            message=Message.assistant([TextPart(self.text)]),
            finish_reason="stop",
            usage=Usage(input_tokens=10, output_tokens=1),
            logprobs=logprobs,
        )

    def stream(self, request):
        raise NotImplementedError

    def close(self):
        pass


def fake_lm(text: str, top: dict[str, float] | None) -> tuple[dspy.LM, LogprobEngine]:
    engine = LogprobEngine(text, top)
    return dspy.LM("fake/model", engine=engine, cache=False), engine


def test_label_scores_split_shared_starts_and_drop_other_tokens():
    labels = ("dark comedy", "dystopia", "comedy")
    top = [
        {"token": " d", "logprob": math.log(0.5)},
        {"token": "com", "logprob": math.log(0.3)},
        {"token": "{", "logprob": math.log(0.2)},
    ]
    scores = label_scores(top, labels)
    assert scores == pytest.approx({"dark comedy": 0.3125, "dystopia": 0.3125, "comedy": 0.375})
    assert label_scores([{"token": "{", "logprob": 0.0}], labels) is None
    assert match_label(" Sports.", ("sports", "politics")) == "sports"
    assert match_label("po", ("sports", "politics")) == "politics"


def test_choice_adapter_scores_allowed_answers_from_the_first_token():
    lm, engine = fake_lm("politics", {"sports": 0.6, "pol": 0.3, "xyz": 0.1})
    predict = dspy.Predict(CategorizeArticle)
    demo = dspy.Example(article="A match report", category="sports")
    with dspy.context(lm=lm, adapter=ChoiceAdapter(max_tokens=6)):
        out = predict(article="Cup final tonight", demos=[demo])
    # the distribution decides, not the text the model happened to write
    assert out.category == "sports"
    assert out.scores["sports"] == pytest.approx(2 / 3) and out.scores["politics"] == pytest.approx(1 / 3)
    request = engine.requests[0]
    assert request.config.max_tokens == 6 and request.config.logprobs == 20
    turns = [(m.role, m.text) for m in request.messages]
    assert turns == [("user", "A match report"), ("assistant", "sports"), ("user", "Cup final tonight")]
    assert "Allowed answers: " in request.system and "politics" in request.system


def test_choice_adapter_without_logprobs_parses_the_reply_or_raises():
    lm, _ = fake_lm("crime", None)
    with dspy.context(lm=lm, adapter=ChoiceAdapter()):
        out = dspy.Predict(CategorizeArticle)(article="x")
    assert out.category == "crime" and out.scores["crime"] == 1.0 and sum(out.scores.values()) == 1.0
    lm, _ = fake_lm("I cannot tell", None)
    with dspy.context(lm=lm, adapter=ChoiceAdapter()), pytest.raises(AdapterParseError):
        dspy.Predict(CategorizeArticle)(article="x")
    with pytest.raises(TypeError, match="closed label set"):
        ChoiceAdapter().format(PersonalizedRequest, [], {"request": "hi"})


def test_planned_mode_is_one_call_with_past_interactions_as_demos(store):
    lm, engine = fake_lm("politics", {"politics": 0.7, "sports": 0.3})
    agent = PersonaAgent(
        CategorizeArticle, user_id="alice", store=store, persona="Loves politics.", mode="planned", k=2, task="news"
    )
    with dspy.context(lm=lm):
        out = agent(article="Parliament votes on the budget", as_of=T0 + timedelta(days=2))
    assert len(engine.requests) == 1
    assert out.mode == "planned" and out.category == "politics"
    request = engine.requests[0]
    assert request.system.startswith("Loves politics.")
    assistant = [m.text for m in request.messages if m.role == "assistant"]
    # only rows strictly before as_of (the first two, both politics), the most similar one last
    assert assistant == ["politics", "politics"]
    users = [m.text for m in request.messages if m.role == "user"]
    assert "Star striker" not in " ".join(users)
    assert users[-1] == "Parliament votes on the budget"
    assert set(out.evidence) == {"labels", "lm", "vote", "prior", "ordinal"}
    assert out.evidence["vote"]["politics"] == pytest.approx(1.0)


def test_model_weight_zero_answers_from_memory_without_a_call(store):
    lm, engine = fake_lm("sports", {"sports": 1.0})
    agent = PersonaAgent(
        CategorizeArticle,
        user_id="alice",
        store=store,
        mode="planned",
        k=3,
        task="news",
        evidence_weights=EvidenceWeights(lm=0.0, vote=1.0, prior=0.0),
    )
    with dspy.context(lm=lm):
        out = agent(article="Senate debates the voting bill")
    assert engine.requests == []
    assert out.category == "politics"


def test_a_new_agent_weighs_the_users_label_prior_with_the_model(store):
    # alice wrote two politics articles of four; the model leans a little to sports
    lm, engine = fake_lm("sports", {"sports": 0.45, "politics": 0.4, "travel": 0.15})
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, mode="planned", k=1, task="news")
    assert agent.evidence_weights == EvidenceWeights(lm=1.0, vote=0.0, prior=1.0)
    with dspy.context(lm=lm):
        out = agent(article="A new museum opens downtown", as_of=T0 + timedelta(days=10))
        alone = agent.with_evidence_weights(EvidenceWeights())(
            article="A new museum opens downtown", as_of=T0 + timedelta(days=10)
        )
    assert len(engine.requests) == 2
    assert out.category == "politics" and alone.category == "sports"
    assert out.evidence["prior"]["politics"] > out.evidence["prior"]["sports"] > out.evidence["prior"]["travel"] > 0


def test_auto_mode_is_planned_for_the_local_model_only(tmp_path):
    local = dspy.LM("local/x", engine=LlamaEngine("local", lambda: tmp_path / "none.gguf"))
    assert resolve_mode("auto", local) == "planned"
    assert resolve_mode("auto", ScriptedLM({})) == "react"
    assert resolve_mode("react", local) == "react"
    with pytest.raises(InvalidInputError, match="mode"):
        PersonaAgent(user_id="alice", mode="fast")  # type: ignore[arg-type]


def test_mode_and_weights_are_saved_in_the_state(store, tmp_path):
    weights = EvidenceWeights(lm=0.5, vote=2.0, prior=0.0)
    agent = PersonaAgent(CategorizeArticle, user_id="alice", store=store, mode="planned", evidence_weights=weights)
    path = tmp_path / "agent.json"
    agent.save(path)
    fresh = PersonaAgent(CategorizeArticle, user_id="alice", store=store)
    fresh.load(path)
    assert fresh.mode == "planned" and fresh.evidence_weights == weights
    # a state saved before planned mode existed (no `answer` predictor, no mode) still loads
    state = agent.dump_state()
    del state["answer"]
    state["persona_agent"] = {"user_id": "alice", "persona": None}
    old = PersonaAgent(CategorizeArticle, user_id="alice", store=store).load_state(state)
    assert old.mode == "auto" and old.evidence_weights == default_weights(labels_of(CategorizeArticle))
    with pytest.raises(InvalidInputError, match=r"evidence_weights\.vote"):
        EvidenceWeights(lm=1.0, vote=-1.0)
