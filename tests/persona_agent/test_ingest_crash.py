"""`persona-agent ingest` killed with SIGKILL at seeded random points, then run again (issue 37 point 5): each kill
leaves none of the file or all of it, the rerun stores exactly the file's rows with no duplicate, and a rerun of
a completed ingest adds nothing and says it skipped them. A real subprocess, real DuckDB and MiniLM.

(The old ingest committed every 256 rows: a kill left a partial file, and the rerun duplicated what was there.)
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import duckdb
import pytest

ROWS = 2_000
KILLS = 3
CLI = [sys.executable, "-c", "from persona_agent.cli import app; app()"]


def records() -> list[dict]:
    """Five users; two rows in three dated (Unix seconds), the others undated (identified by content)."""
    out = []
    for i in range(ROWS):
        row = {
            "user_id": f"user{i % 5}",
            "query": f"question {i}: topic {i % 37}, item {i % 11}?",
            "response": str(i % 7),
        }
        if i % 3:
            row["created_at"] = 1_600_000_000 + 60 * i
        out.append(row)
    return out


def stored(db) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT user_id, query, response, created_at, content_hash FROM interactions").fetchall()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_sigkill_during_ingest_then_rerun_stores_exactly_the_file(tmp_path):
    rows = records()
    path = tmp_path / "interactions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    home = tmp_path / "home"
    env = {**os.environ, "PERSONA_AGENT_HOME": str(home), "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    command = [*CLI, "ingest", str(path), "--batch", "128"]

    rng = random.Random(37)
    delays = sorted(rng.uniform(0.5, 30.0) for _ in range(KILLS))  # seconds into the writing (which takes ~30 s)
    for delay in delays:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "writing them in one transaction" in proc.stderr.readline()
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        after = len(stored(home / "memory.duckdb"))
        assert after in (0, ROWS), f"killed {delay:.1f} s into the writing: {after} of {ROWS} rows"

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    kept = stored(home / "memory.duckdb")
    assert len(kept) == ROWS and len({row[4] for row in kept}) == ROWS  # no duplicate identity
    assert sorted(row[:3] for row in kept) == sorted((r["user_id"], r["query"], r["response"]) for r in rows)
    dated = {(r["user_id"], r["query"]): r["created_at"] for r in rows if "created_at" in r}
    for user, query, _, created_at, _ in kept:
        if (user, query) in dated:
            assert created_at == datetime.fromtimestamp(dated[user, query], UTC).replace(tzinfo=None)

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"Stored 0 interactions for 5 users; skipped {ROWS} duplicates" in again.stdout
    assert len(stored(home / "memory.duckdb")) == ROWS
