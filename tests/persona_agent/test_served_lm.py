"""A served model (an OpenAI-compatible server at PERSONA_AGENT_LM_API_BASE) answers with no key set when the
server is local, and the real key is the one sent when there is one (issue 41 item 3)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from persona_agent.lm.models import SERVED_KEY_PLACEHOLDER, is_local_base_url, make_lm


class _ChatServer(BaseHTTPRequestHandler):
    """The smallest OpenAI chat-completions endpoint: echoes a fixed reply, remembers the Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
        type(self).seen.append(self.headers.get("authorization"))
        reply = {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "served"}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def served(monkeypatch) -> Iterator[list[str | None]]:
    """A chat server on 127.0.0.1 set as the LM's base URL; yields the Authorization headers it received."""
    _ChatServer.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PERSONA_AGENT_LM_API_BASE", f"http://127.0.0.1:{server.server_port}/v1")
    monkeypatch.setenv("PERSONA_AGENT_LM_CACHE", "false")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    yield _ChatServer.seen
    server.shutdown()
    server.server_close()


def test_a_local_server_answers_without_a_key(served):
    lm = make_lm("openai/served-model", num_retries=0)
    assert lm("hello") == ["served"]
    assert served == [f"Bearer {SERVED_KEY_PLACEHOLDER}"]
    assert "api_key" not in json.dumps(lm.dump_state(), default=str)


def test_the_real_key_is_sent_when_set(served, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real-key")
    assert make_lm("openai/served-model", num_retries=0)("hello") == ["served"]
    assert served == ["Bearer sk-real-key"]


def test_a_remote_base_url_gets_no_placeholder(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("PERSONA_AGENT_LM_API_BASE", "https://api.example.com/v1")
    assert "api_key" not in make_lm("openai/served-model").kwargs


@pytest.mark.parametrize(
    ("url", "local"),
    [
        ("http://127.0.0.1:8080/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://192.168.1.20:8000/v1", True),
        ("http://vllm:8000/v1", True),
        ("http://gpu-box.local:8080/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://8.8.8.8/v1", False),
        ("", False),
    ],
)
def test_is_local_base_url(url, local):
    assert is_local_base_url(url) is local
