"""make_lm spec parsing and errors, the local engine's request/response mapping, and its saved state."""

from __future__ import annotations

import asyncio
import json
from typing import Literal

import dspy
import pytest
from dspy.lm15 import Config as LMConfig
from dspy.lm15 import ContextLengthError, Message, Request, ServerError

from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError, ModelFileError
from persona_agent.lm.engine import AsyncLlamaEngine, LlamaEngine, chat_body, llama_response_format, to_response
from persona_agent.lm.models import (
    LOCAL_MODEL_NAME,
    adapter_for,
    configure_response_cache,
    is_local,
    make_lm,
    parse_spec,
)


@pytest.mark.parametrize(
    ("spec", "kind", "model"),
    [
        ("local", "local", LOCAL_MODEL_NAME),
        (" local ", "local", LOCAL_MODEL_NAME),
        ("gguf:/models/tiny.gguf", "gguf", "gguf/tiny"),
        ("openai/gpt-4o-mini", "litellm", "openai/gpt-4o-mini"),
        ("anthropic/claude-3-5-sonnet-20241022", "litellm", "anthropic/claude-3-5-sonnet-20241022"),
        ("ollama_chat/qwen2.5:1.5b", "litellm", "ollama_chat/qwen2.5:1.5b"),
        ("hosted_vllm/Qwen/Qwen2.5-7B-Instruct", "litellm", "hosted_vllm/Qwen/Qwen2.5-7B-Instruct"),
    ],
)
def test_parse_spec(spec, kind, model):
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.model) == (kind, model)


@pytest.mark.parametrize("spec", ["", "   ", "lcoal", "gpt-4o", "gguf:", "gguf:   ", "openai/", "/model", "open ai/x"])
def test_unknown_spec_is_a_config_error_naming_it(spec):
    with pytest.raises(ConfigError, match="lm=") as info:
        parse_spec(spec)
    assert isinstance(info.value, ValueError)


def test_make_lm_reads_the_setting(monkeypatch):
    monkeypatch.setenv("PERSONA_AGENT_LM", "openai/gpt-4o-mini")
    lm = make_lm()
    assert lm.model == "openai/gpt-4o-mini" and lm.cache is True and not is_local(lm)
    assert isinstance(adapter_for(lm), dspy.ChatAdapter) and not isinstance(adapter_for(lm), dspy.JSONAdapter)


def test_make_lm_hosted_takes_api_base_and_cache_settings(monkeypatch):
    monkeypatch.setenv("PERSONA_AGENT_LM_API_BASE", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("PERSONA_AGENT_LM_CACHE", "false")
    lm = make_lm("openai/served-model", max_tokens=50)
    assert lm.kwargs["api_base"] == "http://127.0.0.1:9/v1" and lm.kwargs["max_tokens"] == 50
    assert lm.cache is False
    assert "api_key" not in json.dumps(lm.dump_state(), default=str)


def test_make_lm_default_is_the_local_model_and_loads_nothing():
    lm = make_lm()
    assert lm.model == LOCAL_MODEL_NAME and is_local(lm)
    assert lm.kwargs["temperature"] == 0.0
    assert isinstance(adapter_for(lm), dspy.JSONAdapter)
    assert isinstance(lm._async_engine_spec, AsyncLlamaEngine)


def test_missing_gguf_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no file"):
        make_lm(f"gguf:{tmp_path / 'missing.gguf'}")


def test_non_gguf_file_is_a_model_file_error(tmp_path):
    path = tmp_path / "notes.gguf"
    path.write_text("not a model")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        make_lm(f"gguf:{path}")


def test_response_cache_goes_to_the_settings_cache_folder(tmp_path):
    settings = Settings(home=tmp_path / "h")
    directory = configure_response_cache(settings)
    assert directory == tmp_path / "h" / "cache" / "dspy"
    assert dspy.cache.enable_disk_cache is True
    off = Settings(home=tmp_path / "h", lm_cache=False)
    configure_response_cache(off)
    assert dspy.cache.enable_disk_cache is False and dspy.cache.enable_memory_cache is False
    configure_response_cache(settings)


# -- the engine's mapping, driven through DSPy's real adapters --------------------------------------


class _RecordingRuntime:
    """Stands in for llama.cpp at its C boundary: records the body, replies like the server does."""

    def __init__(self, content: str) -> None:
        self.content = content
        self.bodies: list[dict] = []

    def chat(self, body: dict) -> dict:
        self.bodies.append(body)
        return {
            "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": self.content}}],
            "usage": {"prompt_tokens": 120, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 100}},
            "timings": {"prompt_ms": 50.0, "predicted_ms": 70.0, "cache_n": 100},
            "id": "chatcmpl-1",
        }


class _RecordingEngine(LlamaEngine):
    def __init__(self, runtime: _RecordingRuntime) -> None:
        super().__init__("local", lambda: None, seed=7)
        self._runtime_stub = runtime

    def runtime(self):
        return self._runtime_stub


class Genre(dspy.Signature):
    """Pick the genre."""

    text: str = dspy.InputField()
    genre: Literal["sports", "politics"] = dspy.OutputField()


def test_json_adapter_schema_reaches_llama_cpp_in_its_shape():
    runtime = _RecordingRuntime('{"genre": "sports"}')
    engine = _RecordingEngine(runtime)
    lm = dspy.LM(LOCAL_MODEL_NAME, engine=engine, async_engine=AsyncLlamaEngine(engine), temperature=0.0, cache=False)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        assert dspy.Predict(Genre)(text="The match ended 2-1.").genre == "sports"
        assert asyncio.run(dspy.Predict(Genre).acall(text="Goal!")).genre == "sports"
    body = runtime.bodies[0]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and "schema" not in fmt
    assert fmt["json_schema"]["schema"]["properties"]["genre"]["enum"] == ["sports", "politics"]
    assert body["temperature"] == 0.0 and body["seed"] == 7 and body["cache_prompt"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    usage = lm.history[-1]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (120, 7)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 100


def test_chat_adapter_sends_no_response_format():
    runtime = _RecordingRuntime("[[ ## genre ## ]]\npolitics\n\n[[ ## completed ## ]]")
    engine = _RecordingEngine(runtime)
    lm = dspy.LM(LOCAL_MODEL_NAME, engine=engine, async_engine=AsyncLlamaEngine(engine), cache=False)
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        assert dspy.Predict(Genre)(text="The vote passed.").genre == "politics"
    assert "response_format" not in runtime.bodies[0]


def test_response_format_shapes():
    assert llama_response_format(None) is None
    assert llama_response_format({"type": "json_object"}) == {"type": "json_object"}
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert llama_response_format({"type": "json_schema", "schema": schema}) == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": schema},
    }


def test_request_options_and_refusals():
    request = Request(
        model="m",
        messages=(Message.user("hi"),),
        system="be brief",
        config=LMConfig(max_tokens=5, temperature=0.7, seed=3, stop=("\n",), top_p=0.9),
    )
    body = chat_body(request, seed=0, max_tokens=100, cache_prompt=False)
    assert body["max_tokens"] == 5 and body["temperature"] == 0.7 and body["seed"] == 3
    assert body["stop"] == ["\n"] and body["top_p"] == 0.9 and body["cache_prompt"] is False
    assert body["messages"][0] == {"role": "system", "content": "be brief"}


def test_log_probabilities_are_asked_for_and_returned():
    """Scoring the allowed answers needs the model's token log-probabilities: asked as llama.cpp's server takes them,
    returned as lm15's (the reply below has the shape the in-process runtime gave for a one-token answer)."""
    ask = Request(model="m", messages=(Message.user("x"),), config=LMConfig(logprobs=2))
    body = chat_body(ask, seed=0, max_tokens=1, cache_prompt=True)
    assert body["logprobs"] is True and body["top_logprobs"] == 2
    chosen_only = chat_body(ask.__class__(model="m", messages=(Message.user("x"),), config=LMConfig(logprobs=0)),
                            seed=0, max_tokens=1, cache_prompt=True)  # fmt: skip
    assert chosen_only["logprobs"] is True and "top_logprobs" not in chosen_only
    top = [
        {"id": 13564, "token": "sports", "bytes": [115, 112, 111, 114, 116, 115], "logprob": -0.01},
        {"id": 60901, "token": "sport", "bytes": [115, 112, 111, 114, 116], "logprob": -4.97},
    ]
    raw = {
        "choices": [
            {
                "message": {"content": "sports"},
                "finish_reason": "length",
                "logprobs": {"content": [{**top[0], "top_logprobs": top}]},
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 1},
    }
    (step,) = to_response(raw, "m").logprobs
    assert (step.token, step.logprob, step.token_id) == ("sports", -0.01, 13564)
    assert [(alt.token, alt.logprob) for alt in step.top] == [("sports", -0.01), ("sport", -4.97)]
    assert step.top[1].bytes == (115, 112, 111, 114, 116)
    assert to_response({**raw, "choices": [{"message": {"content": "x"}}]}, "m").logprobs is None


def test_server_errors_become_lm15_errors():
    with pytest.raises(ContextLengthError):
        to_response({"code": 400, "message": "the request exceeds the available context size", "type": "x"}, "m")
    with pytest.raises(ServerError):
        to_response({"error": {"code": 500, "message": "boom"}}, "m")
    reply = to_response({"choices": [{"finish_reason": "length", "message": {"content": "ab"}}], "usage": {}}, "m")
    assert reply.text == "ab" and reply.finish_reason == "length"


def test_engine_state_round_trips_without_secrets(tmp_path):
    lm = make_lm("local")
    state = lm.dump_state()
    text = json.dumps(state, default=str)
    assert "api_key" not in text  # the listener's key is made per process and never saved
    assert state["engine"]["state"]["model_ref"] == "local"
    with pytest.raises(ValueError, match="allow_unsafe_lm_state"):
        dspy.BaseLM.load_state(state)
    loaded = dspy.BaseLM.load_state(state, allow_custom_lm_class=True)
    assert is_local(loaded) and loaded.engine.dump_state() == lm.engine.dump_state()
    assert isinstance(loaded._async_engine_spec, AsyncLlamaEngine)
