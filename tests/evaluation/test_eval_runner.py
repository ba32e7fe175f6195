"""The runner end to end with a scripted LM: every method answers, the floors are right, nothing from a
query's future (or its own time) reaches any prompt, failures are rows, and a resumed run equals a whole one."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from persona_agent.core.records import user_key
from persona_agent.core.tasks import LAMP_2N, LAMP_3
from persona_agent.evaluation.errors import EvalAbortedError, EvalRunMismatchError
from persona_agent.evaluation.plan import available_methods
from persona_agent.evaluation.runner import RunConfig, memory_items, run_evaluation
from persona_agent.testing import ScriptedLM
from tests.support import PROFILE_ECHO

from .conftest import FAST, run_all
from .runner_fixtures import (
    EXPECTED_MAJORITY,
    EXPECTED_NEAREST,
    PROFILE,
    WordsEmbedder,
    call_text,
    markers,
    news_dataset,
    news_lm,
    ratings_dataset,
    ratings_lm,
)

ORDER = {
    f"zq{u}{i}": (user, order)
    for user, u, rows in (
        ("alice", 0, [0, 1, 2, 3, 4, 5, 5, 6, 7]),
        ("bob", 1, [0, 1, 2, 3, 4, 5]),
    )
    for i, order in enumerate(rows)
}
FIRST_QUERY = {"alice": 5, "bob": 4}
SIMULTANEOUS = "zq05"  # alice's item on the day of her first query


def _results(run) -> dict:
    return json.loads(run.result.results.read_text())


def test_every_method_answers_every_query(full_run):
    results = _results(full_run)
    by_method = Counter(p["method"] for p in results["predictions"])
    assert by_method == dict.fromkeys(available_methods(LAMP_2N), 5)
    assert results["complete"] and results["totals"]["errors"] == 0
    for p in results["predictions"]:
        assert p["prediction"] is not None and p["gold"] and p["error"] is None
    stages = Counter(r["stage"] for r in results["setup"])
    assert stages == {
        "profile": 2,
        "align:persona_aligner": 2,
        "align:gepa": 2,
        "align:copro": 2,
        "align:persona_aligner:planned": 2,
    }
    aligner = [r for r in results["setup"] if r["stage"] == "align:persona_aligner"]
    assert all(r["persona_version"] == 1 and r["calls"] > 0 for r in aligner)  # the scripted update was taken
    summary = {s["method"]: s for s in results["summary"]}
    assert summary["react"]["per_sample"]["calls"] == 3  # search, finish, answer
    assert summary["persona_agent"]["alignment_per_user"]["users"] == 2
    assert summary["rag"]["per_sample"]["tokens"] > summary["non_personalized"]["per_sample"]["tokens"]


def test_floors_match_hand_computed_labels(full_run):
    results = _results(full_run)
    rows = {m: [p for p in results["predictions"] if p["method"] == m] for m in ("majority", "nearest")}
    assert [p["prediction"] for p in rows["majority"]] == EXPECTED_MAJORITY
    assert [p["prediction"] for p in rows["nearest"]] == EXPECTED_NEAREST
    summary = {s["method"]: s["metrics"]["accuracy"]["estimate"] for s in results["summary"]}
    assert summary["majority"] == pytest.approx(3 / 5) and summary["nearest"] == pytest.approx(4 / 5)
    assert all(p["calls"] == 0 for r in rows.values() for p in r)


def test_memory_holds_only_items_before_the_first_query():
    for user in news_dataset().users:
        held = memory_items(user)
        assert held and all(it.order < user.queries[0].order for it in held)
        assert SIMULTANEOUS not in {it.id for it in held}


def test_no_prompt_shows_an_item_from_the_future_of_what_it_answers(full_run):
    """Every marker in a prompt belongs to the same user and is strictly earlier than the item being answered
    (a query, or an alignment item being simulated or critiqued); set-up prompts (profile, gradient, update,
    reflection, proposals) show only items before the user's first query."""
    seen_past = Counter()
    for call in full_run.lm.calls:
        shown = markers(call_text(call))
        assert SIMULTANEOUS not in shown
        current_text = call.inputs.get("article") or call.inputs.get("request") or ""
        current = markers(current_text)
        assert len(current) <= 1
        if current:
            (item,) = current
            user, order = ORDER[item]
            for other in shown - current:
                assert ORDER[other][0] == user, (item, other)
                assert ORDER[other][1] < order, f"{other} shown while answering {item}"
                seen_past[item] += 1
        else:
            users = {ORDER[m][0] for m in shown}
            assert len(users) <= 1
            for other in shown:
                assert ORDER[other][1] < FIRST_QUERY[ORDER[other][0]], f"{other} in a set-up prompt"
    # not vacuous: every query was answered with some of its user's past in view
    assert {q for q in seen_past if ORDER[q][1] >= FIRST_QUERY[ORDER[q][0]]} == {
        "zq06",
        "zq07",
        "zq08",
        "zq14",
        "zq15",
    }


def test_resume_after_an_interruption_gives_the_same_results(tmp_path, monkeypatch):
    """The same command run whole (users in parallel) and run interrupted-then-resumed (one worker) gives the
    same results file, up to wall-clock seconds; the resume reuses the cached profile and persona."""

    class InterruptedRunError(Exception):
        pass

    seen = []

    def stop_after_32(row):
        seen.append(row)
        if sum(r["kind"] == "prediction" for r in seen) == 32:  # alice, mid-way through the ablations
            raise InterruptedRunError

    out = Path("results")  # the same relative --out in both folders, so the recorded commands are equal
    monkeypatch.chdir((tmp_path / "whole").mkdir() or tmp_path / "whole")
    _, whole = run_all(out)
    monkeypatch.chdir((tmp_path / "resumed").mkdir() or tmp_path / "resumed")
    with pytest.raises(InterruptedRunError):
        run_all(out, workers=1, after_row=stop_after_32)
    log = next(Path().rglob("predictions.jsonl"))
    assert sum('"kind": "prediction"' in line for line in log.read_text().splitlines()) == 32
    with log.open("a") as handle:
        handle.write('{"kind": "prediction", "method": "no_ac')  # a torn last line, as a crash leaves it

    lm, resumed = run_all(out, workers=1)
    assert resumed.rows_written == 100 - 32 and resumed.rows_skipped == 32
    # alice's profile came from the state cache, not from a new LM call
    profile_calls = [c for c in lm.calls if c.spec == PROFILE]
    assert [markers(call_text(c)) & {"zq00", "zq10"} for c in profile_calls] == [{"zq10"}]

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if "seconds" not in k}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    expected = json.loads((tmp_path / "whole" / whole.results).read_text())
    got = json.loads(resumed.results.read_text())
    assert len(got["predictions"]) == 100 and strip(got) == strip(expected)


def test_a_run_folder_refuses_another_configuration(full_run):
    config = RunConfig(task="lamp2n", users=5, queries=3, methods="floors", seed=1, lm="scripted/lm", **FAST)
    config = RunConfig(**{**config.as_dict(), "out": full_run.out, "run_name": "scripted-lm-5u-3q-seed0"})
    with pytest.raises(EvalRunMismatchError, match="identity"):
        run_evaluation(config, dataset=news_dataset(), embedder=WordsEmbedder(), progress=False)


def test_failures_are_rows_retried_on_request_and_a_streak_aborts(tmp_path):
    config = RunConfig(task="lamp2n", users=5, queries=3, methods="non_personalized", lm="scripted/lm", out=tmp_path)
    broken = ScriptedLM({"article -> category": {"category": "weather"}})  # off-list: the adapter cannot parse it
    first = run_evaluation(config, dataset=news_dataset(), lm=broken, progress=False)
    assert first.errors == 5
    rows = json.loads(first.results.read_text())["predictions"]
    assert all(r["prediction"] is None and r["error"].startswith("AdapterParseError") for r in rows)
    assert json.loads(first.results.read_text())["summary"][0]["metrics"]["accuracy"]["estimate"] == 0.0

    fixed = ScriptedLM({"article -> category": {"category": "politics"}})
    again = run_evaluation(config, dataset=news_dataset(), lm=fixed, progress=False)
    assert again.rows_written == 0  # failures are results until asked to retry them
    retried = run_evaluation(config, dataset=news_dataset(), lm=fixed, progress=False, retry_errors=True)
    assert retried.rows_written == 5 and retried.errors == 0
    assert json.loads(retried.results.read_text())["totals"]["errors"] == 0

    streak = RunConfig(**{**config.as_dict(), "run_name": "streak"})
    with pytest.raises(EvalAbortedError, match="3 examples in a row"):
        run_evaluation(streak, dataset=news_dataset(), lm=broken, progress=False, max_consecutive_errors=3)


def test_parallel_users_give_the_same_predictions(full_run, tmp_path):
    config = RunConfig(
        task="lamp2n", users=5, queries=3, methods="floors,rag,react", lm="s/lm", out=tmp_path, workers=2
    )
    result = run_evaluation(config, dataset=news_dataset(), lm=news_lm(), embedder=WordsEmbedder(), progress=False)
    parallel = {
        (p["method"], p["query_id"]): p["prediction"] for p in json.loads(result.results.read_text())["predictions"]
    }
    whole = {(p["method"], p["query_id"]): p["prediction"] for p in _results(full_run)["predictions"]}
    assert parallel == {k: v for k, v in whole.items() if k[0] in ("majority", "nearest", "rag", "react")}


def test_rating_floors_score_the_mean_and_round_it_for_accuracy(tmp_path):
    config = RunConfig(task="lamp3", users=5, queries=2, methods="floors", lm="scripted/lm", out=tmp_path)
    result = run_evaluation(config, dataset=ratings_dataset(), embedder=WordsEmbedder(), progress=False)
    results = json.loads(result.results.read_text())
    majority = [p["prediction"] for p in results["predictions"] if p["method"] == "majority"]
    assert majority == ["4.333333", "4.333333"]  # mean of 5, 4, 4; golds 2 and 5
    metrics = {s["method"]: s["metrics"] for s in results["summary"]}
    assert metrics["majority"]["MAE"]["estimate"] == pytest.approx((2.333333 + 0.666667) / 2, abs=1e-6)
    assert metrics["majority"]["RMSE"]["estimate"] == pytest.approx(((2.333333**2 + 0.666667**2) / 2) ** 0.5, 1e-6)
    assert metrics["majority"]["accuracy (rounded)"]["estimate"] == 0.0  # rounds to 4: neither 2 nor 5
    nearest = [p["prediction"] for p in results["predictions"] if p["method"] == "nearest"]
    assert nearest == ["4", "5"]  # "cable" -> r2 (4), "bright strings" -> r0 (5)
    assert metrics["nearest"]["MAE"]["estimate"] == pytest.approx(1.0)
    assert metrics["nearest"]["accuracy (rounded)"]["estimate"] == pytest.approx(0.5)
    median = [p["prediction"] for p in results["predictions"] if p["method"] == "median"]
    assert median == ["4", "4"]  # median of 5, 4, 4
    assert metrics["median"]["MAE"]["estimate"] == pytest.approx(1.5)
    assert metrics["median"]["accuracy (rounded)"]["estimate"] == 0.0


def test_every_method_and_strategy_answers_rating_queries(tmp_path):
    """LaMP-3 through every method, GEPA and COPRO included: the strategies' metric and feedback work on
    ratings too, and every answer is on the 1..5 scale."""
    config = RunConfig(task="lamp3", users=5, queries=2, methods="all", lm="scripted/lm", out=tmp_path, **FAST)
    lm = ratings_lm()
    result = run_evaluation(config, dataset=ratings_dataset(), lm=lm, embedder=WordsEmbedder(), progress=False)
    results = json.loads(result.results.read_text())
    assert results["complete"] and results["totals"]["errors"] == 0
    by_method = Counter(p["method"] for p in results["predictions"])
    assert by_method == dict.fromkeys(available_methods(LAMP_3), 2)
    assert all(
        p["error"] is None and p["prediction"] in {"1", "2", "3", "4", "5"}
        for p in results["predictions"]
        if p["method"] not in ("majority",)
    )
    setup = {r["stage"]: r for r in results["setup"]}
    assert set(setup) == {
        "profile",
        "align:persona_aligner",
        "align:gepa",
        "align:copro",
        "align:persona_aligner:planned",
    }
    assert all(r["error"] is None and r["calls"] > 0 for r in setup.values())
    assert setup["align:copro"]["persona_check"] == "ok" and setup["align:gepa"]["persona_check"] == "ok"
    assert any(c.spec == " -> " for c in lm.calls)  # GEPA reflected on the rating feedback


def test_methods_can_be_added_to_a_run_by_rerunning_with_more(tmp_path):
    def run(methods: str):
        config = RunConfig(task="lamp2n", users=5, queries=3, methods=methods, lm="scripted/lm", out=tmp_path)
        return run_evaluation(config, dataset=news_dataset(), lm=news_lm(), embedder=WordsEmbedder(), progress=False)

    run("floors")
    more = run("rag")
    assert (more.rows_written, more.rows_skipped) == (5, 0)
    results = json.loads(more.results.read_text())
    assert [s["method"] for s in results["summary"]] == ["majority", "nearest", "rag"] and results["complete"]
    assert "--methods majority,nearest,rag " in results["command"]


def test_logs_name_users_by_key_and_a_format_1_log_still_resumes(full_run, tmp_path):
    """Dataset ids stay out of the committed files; a log written before keys existed resumes with nothing
    redone and reports the same results."""
    alice, bob = user_key("LaMP-2N", "alice"), user_key("LaMP-2N", "bob")
    log_text = full_run.result.log.read_text()
    results = _results(full_run)
    assert "alice" not in log_text and "bob" not in log_text
    assert {p["user"] for p in results["predictions"]} == {alice, bob} and results["users"] == [alice, bob]

    ids = {alice: "alice", bob: "bob"}  # rewrite the log as format 1 wrote it
    old_rows = []
    for row in map(json.loads, log_text.splitlines()):
        if row["kind"] == "meta":
            row = {
                **row,
                "format": "persona_agent.eval/1",
                "identity": {**row["identity"], "format": "persona_agent.eval/1"},
            }
            row["users"] = [ids[u] for u in row["users"]]
            row["queries"] = {ids[u]: q for u, q in row["queries"].items()}
        else:
            row["user_id"] = ids[row.pop("user")]
        old_rows.append(row)
    run_dir = tmp_path / "lamp2n" / full_run.result.run_dir.name
    shutil.copytree(full_run.result.run_dir, run_dir)
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old_rows))

    config = RunConfig(task="lamp2n", users=5, queries=3, methods="all", lm="scripted/lm", out=tmp_path, **FAST)
    resumed = run_evaluation(
        config, dataset=news_dataset(), lm=ScriptedLM({}), embedder=WordsEmbedder(), progress=False
    )
    assert (resumed.rows_written, resumed.rows_skipped) == (0, len(results["predictions"]))
    assert json.loads(resumed.results.read_text())["predictions"] == results["predictions"]


def test_a_lost_state_folder_rebuilds_profiles_and_the_report_compares_like_with_like(tmp_path, caplog):
    """`state/` is not committed: a resume that finds it gone must say so, keep the first build's cost, and
    not credit alignment with answers that changed because the LM wrote the rebuilt profile differently."""

    def run(methods: str, lm: ScriptedLM):
        config = RunConfig(task="lamp2n", users=5, queries=3, methods=methods, lm="scripted/lm", out=tmp_path, **FAST)
        return run_evaluation(config, dataset=news_dataset(), lm=lm, embedder=WordsEmbedder(), progress=False)

    first = run("floors,no_alignment", news_lm())
    shutil.rmtree(first.run_dir / "state")
    with caplog.at_level("WARNING", logger="persona_agent.evaluation.user_setup"):
        second = run("floors,no_alignment,persona_agent", news_lm(profile="Follows culture and the arts."))
    results = json.loads(second.results.read_text())
    users = results["users"]
    assert all(any(u in m and "cached copy" in m for m in caplog.messages) for u in users)

    profiles = [r for r in results["setup"] if r["stage"] == "profile"]
    assert Counter(r["user"] for r in profiles) == dict.fromkeys(users, 2)  # both builds' costs are kept
    assert len({r["profile_sha"] for r in profiles}) == 2
    assert (results["profile_per_user"]["users"], results["profile_per_user"]["builds"]) == (len(users), 2 * len(users))

    rows = {m: [r for r in results["predictions"] if r["method"] == m] for m in ("no_alignment", "persona_agent")}
    assert rows["persona_agent"] and all(r["profile_generation"] == 2 for r in rows["persona_agent"])
    assert all("profile_generation" not in r for r in rows["no_alignment"])
    (effect,) = [e for e in results["alignment_effects"] if e["method"] == "persona_agent"]
    assert (effect["queries"], effect["profile_mismatch"]) == (0, len(rows["persona_agent"]))
    matchups = {m["method"]: m for m in results["head_to_head"]["matchups"]}
    assert (matchups["no_alignment"]["n"], matchups["no_alignment"]["profile_mismatch"]) == (
        0,
        len(rows["persona_agent"]),
    )
    assert (matchups["majority"]["n"], matchups["majority"]["profile_mismatch"]) == (len(rows["persona_agent"]), 0)
    markdown = second.markdown.read_text()
    assert "Left out of the PersonaAgent vs each method table" in markdown and "builds for" in markdown
    assert "Left out of the what alignment did table" in markdown


def test_a_log_cut_after_a_rebuild_gets_the_cached_builds_row_back(tmp_path, caplog):
    """The log is the record and `state/` the cache: when the row of a rebuilt profile was cut from the log
    but its cache kept, the resume writes the row again from the cache before answering, so the answers
    made under it are not paired with the first build's."""

    class InterruptedRunError(Exception):
        pass

    def stop_at_a_profile(row):
        if row.get("stage") == "profile":
            raise InterruptedRunError

    def run(methods: str, lm: ScriptedLM, **kwargs):
        config = RunConfig(
            task="lamp2n", users=5, queries=3, methods=methods, lm="scripted/lm", out=tmp_path, workers=1, **FAST
        )
        return run_evaluation(config, dataset=news_dataset(), lm=lm, embedder=WordsEmbedder(), progress=False, **kwargs)

    first = run("floors,no_alignment", news_lm())
    before_rebuild = first.log.read_text()
    shutil.rmtree(first.run_dir / "state")
    rebuilt = news_lm(profile="Follows culture and the arts.")
    with pytest.raises(InterruptedRunError):
        run("floors,no_alignment,persona_agent", rebuilt, after_row=stop_at_a_profile)
    first.log.write_text(before_rebuild)  # the rebuilt profile's row is cut; its cache stays
    with caplog.at_level("WARNING", logger="persona_agent.evaluation.user_setup"):
        resumed = run("floors,no_alignment,persona_agent", rebuilt)

    results = json.loads(resumed.results.read_text())
    alice = user_key("LaMP-2N", "alice")
    assert any(alice in m and "not the build the log records last" in m for m in caplog.messages)
    profiles = [r for r in results["setup"] if r["stage"] == "profile" and r["user"] == alice]
    assert len(profiles) == 2 and len({r["profile_sha"] for r in profiles}) == 2
    assert sum(c.spec == PROFILE for c in rebuilt.calls) == 2  # alice's build once (then cached), bob's once
    answers = [r for r in results["predictions"] if r["method"] == "persona_agent" and r["user"] == alice]
    assert answers and all(r["profile_generation"] == 2 for r in answers)
    (effect,) = [e for e in results["alignment_effects"] if e["method"] == "persona_agent"]
    assert effect["queries"] == 0 and effect["profile_mismatch"] == len(
        [r for r in results["predictions"] if r["method"] == "persona_agent"]
    )


def test_a_rebuilt_profile_the_lm_writes_again_word_for_word_is_the_same_profile(tmp_path):
    def run(methods: str):
        config = RunConfig(task="lamp2n", users=5, queries=3, methods=methods, lm="scripted/lm", out=tmp_path, **FAST)
        return run_evaluation(config, dataset=news_dataset(), lm=news_lm(), embedder=WordsEmbedder(), progress=False)

    first = run("no_alignment")
    shutil.rmtree(first.run_dir / "state")
    results = json.loads(run("no_alignment,persona_agent").results.read_text())
    assert all("profile_generation" not in r for r in results["predictions"])
    (effect,) = [e for e in results["alignment_effects"] if e["method"] == "persona_agent"]
    assert effect["profile_mismatch"] == 0 and effect["queries"] > 0


def test_the_per_user_progress_line_names_users_by_key(tmp_path):
    """A background run's stderr is saved to a log file: it names users by key, never by dataset id."""
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    config = RunConfig(task="lamp2n", users=5, queries=3, methods="floors", lm="scripted/lm", out=tmp_path)
    run_evaluation(
        config, dataset=news_dataset(), embedder=WordsEmbedder(), progress=False, console=Console(file=out, width=200)
    )
    lines = [line for line in out.getvalue().splitlines() if line.startswith("[")]
    assert len(lines) == 2, out.getvalue()
    keys = {user_key("LaMP-2N", user) for user in ("alice", "bob")}
    assert {key for key in keys for line in lines if f"user {key}:" in line} == keys
    assert "alice" not in out.getvalue() and "bob" not in out.getvalue()


def test_a_profile_the_lm_keeps_echoing_is_an_error_row_and_the_user_is_answered_without_one(tmp_path):
    """A profile that is the builder's own prompt describes no user: the run records the error on the profile
    row (with both asks' cost) and answers every query under the profile-free initial persona."""
    config = RunConfig(
        task="lamp2n", users=5, queries=3, methods="no_alignment", lm="scripted/lm", out=tmp_path, **FAST
    )
    lm = news_lm(profile=PROFILE_ECHO)
    run = run_evaluation(config, dataset=news_dataset(), lm=lm, embedder=WordsEmbedder(), progress=False)
    results = json.loads(run.results.read_text())
    profiles = [r for r in results["setup"] if r["stage"] == "profile"]
    assert len(profiles) == len(results["users"])
    assert all(r["error"].startswith("ProfileEchoError: ") and r["calls"] == 2 for r in profiles)
    answers = [r for r in results["predictions"] if r["method"] == "no_alignment"]
    assert answers and all(r["error"] is None for r in answers)
    answering = [call for call in lm.calls if "profile" not in call.output_fields]
    assert answering and all("they tend to give and when" not in call_text(call) for call in answering)
