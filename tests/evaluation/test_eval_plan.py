"""What a run compares and how it is named: tasks, methods, configurations and their reproduce command, the
`eval run` command on a tiny data folder, and the cached movie knowledge base."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from persona_agent.core.errors import DatasetFormatError, InvalidInputError
from persona_agent.core.records import EvalUser, Item, user_key
from persona_agent.core.tasks import LAMP_2M, LAMP_2N, LAMP_3, LAMP_4
from persona_agent.evaluation.cli import eval_app
from persona_agent.evaluation.moviekb import movie_documents, movie_knowledge_base
from persona_agent.evaluation.plan import (
    GROUPS,
    METHOD_SPECS,
    METHODS_BY_NAME,
    alignment_metric,
    parse_methods,
    task_setup,
)
from persona_agent.evaluation.runner import RunConfig, alignment_examples, item_time, sample_users
from persona_agent.signatures import TagMovie

from .runner_fixtures import WordsEmbedder, news_dataset


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("lamp2n", LAMP_2N), ("LaMP-2M", LAMP_2M), ("3", LAMP_3), ("news_headline", LAMP_4), ("LaMP_2N", LAMP_2N)],
)
def test_task_names(name, expected):
    assert task_setup(name).task == expected


def test_tasks_without_a_data_setup_are_refused():
    with pytest.raises(InvalidInputError, match="no real-data set-up for LaMP-1"):
        task_setup("lamp1")
    assert task_setup("lamp2m").knowledge and task_setup("lamp2m").signature is TagMovie


def test_method_lists_and_groups():
    assert parse_methods("all", LAMP_3) == tuple(m.name for m in METHOD_SPECS)
    assert parse_methods("all", LAMP_2N) == tuple(m.name for m in METHOD_SPECS if m.name != "median")
    assert parse_methods("floors", LAMP_3) == ("majority", "nearest", "median")  # a median only for ratings
    assert parse_methods("rag, floors,rag", LAMP_2N) == ("majority", "nearest", "rag")
    assert parse_methods("planned", LAMP_2N) == ("planned",)  # the method, not a group
    assert not set(GROUPS) & set(METHODS_BY_NAME)
    assert parse_methods("planned_mode", LAMP_2N) == (
        "vote",
        "planned_no_persona",
        "planned_no_memory",
        "planned_no_alignment",
        "planned",
    )
    assert parse_methods("strategies", LAMP_3) == (
        "persona_agent",
        "persona_agent+gepa",
        "persona_agent+copro",
        "planned",
    )
    assert parse_methods(["ablations"], LAMP_2N) == (
        "no_persona",
        "no_memory",
        "no_action",
        "no_alignment",
        "planned_no_persona",
        "planned_no_memory",
        "planned_no_alignment",
    )
    assert "majority" not in parse_methods("all", LAMP_4)  # no majority headline
    with pytest.raises(InvalidInputError, match="unknown for LaMP-2N"):
        parse_methods("median", LAMP_2N)
    with pytest.raises(InvalidInputError, match="unknown for LaMP-2N"):
        parse_methods("rag,mipro", LAMP_2N)


def test_alignment_metrics():
    import dspy

    rating = alignment_metric(LAMP_3)
    example = dspy.Example(review="ok", rating="4").with_inputs("review")
    assert rating(example, dspy.Prediction(rating="4")) == 1.0
    assert rating(example, dspy.Prediction(rating="2")) == 0.5
    assert rating(example, dspy.Prediction(rating="meh")) == 1 - 3 / 4  # scored as the farther of 1 and 5
    label = alignment_metric(LAMP_2N)
    news = dspy.Example(article="a", category="politics").with_inputs("article")
    assert label(news, dspy.Prediction(category="politics")) == 1.0
    assert label(news, dspy.Prediction(category="sports")) == 0.0


def test_config_names_its_folder_and_reproduces_itself(tmp_path):
    config = RunConfig(task="2N", users=20, methods="floors,persona_agent", lm="openai/gpt-4o-mini", out=tmp_path)
    assert config.task == "LaMP-2N" and config.methods == ("majority", "nearest", "persona_agent")
    assert config.run_dir == tmp_path / "lamp2n" / "openai-gpt-4o-mini-20u-3q-seed0"
    argv = shlex.split(config.command())[1:]  # drop the program name
    assert argv[:2] == ["eval", "run"] and "--methods" in argv
    assert argv[argv.index("--methods") + 1] == "majority,nearest,persona_agent"
    assert RunConfig(task="lamp2n", methods=["all"]).command().count("--methods all") == 1
    with pytest.raises(InvalidInputError, match="align_budget"):
        RunConfig(task="lamp3", align_budget=2)
    with pytest.raises(InvalidInputError, match="run_name"):
        RunConfig(task="lamp3", run_name="a/b")


def test_config_names_paths_from_the_working_directory_not_the_machine(tmp_path, monkeypatch):
    """A committed run's reproduce line and config work on another checkout: no absolute folders in them."""
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    config = RunConfig(task="2N", data=tmp_path / "shared" / "data", out=tmp_path / "repo" / "results")
    argv = shlex.split(config.command())
    assert argv[argv.index("--data") + 1] == "../shared/data"
    assert argv[argv.index("--out") + 1] == "results"
    assert config.as_dict()["data"] == "../shared/data" and config.as_dict()["out"] == "results"
    assert str(tmp_path) not in config.command()


def test_users_are_sampled_with_the_seed():
    dataset = news_dataset()
    assert [u.user_id for u in sample_users(dataset, 1, 0)] == [u.user_id for u in sample_users(dataset, 1, 0)]
    assert {u.user_id for u in sample_users(dataset, 5, 3)} == {"alice", "bob"}
    picks = {sample_users(dataset, 1, seed)[0].user_id for seed in range(20)}
    assert picks == {"alice", "bob"}


def test_alignment_examples_are_the_items_before_the_first_query_at_their_own_time():
    alice = news_dataset().user("alice")
    examples = alignment_examples(alice, task_setup("lamp2n"), 3)
    assert [e.article.split()[0] for e in examples] == ["zq02", "zq03", "zq04"]
    assert all(e.as_of == item_time(alice.item(e.article.split()[0])) for e in examples)
    assert set(examples[0].inputs().keys()) == {"article"}
    assert set(alignment_examples(alice, task_setup("lamp2n"), 3, as_of_input=True)[0].inputs().keys()) == {
        "article",
        "as_of",
    }
    bob = EvalUser(
        user_id="bob",
        task="LaMP-2N",
        history=(Item(id="b0", input="x", output="travel", order=0),),
        queries=(Item(id="b1", input="y", output="travel", order=3),),
    )
    assert item_time(bob.queries[0]) > item_time(bob.history[0])


def test_eval_run_command_on_a_small_data_folder(tmp_path):
    header = ["reviewerID", "asin", "reviewText", "overall", "unixReviewTime"]
    rows = [
        [user, f"B{i}", f"review {i} by {user}", stars, 1_400_000_000 + 86_400 * i]
        for i, stars in enumerate([5, 4, 4, 3, 5])
        for user in ("U1",)
    ]
    rows += [["U2", f"C{i}", f"review {i}", 2, 1_400_000_000 + 86_400 * i] for i in range(4)]
    write_csv(tmp_path / "data" / "amazon-musical-instruments" / "Musical_instruments_reviews.csv", header, rows)
    args = ["run", "--task", "lamp3", "--users", "5", "--queries", "2", "--methods", "majority", "--no-progress"]
    args += ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    outcome = CliRunner().invoke(eval_app, args)
    assert outcome.exit_code == 0, outcome.output
    run_dir = tmp_path / "out" / "lamp3" / "local-5u-2q-seed0"
    results = json.loads((run_dir / "results.json").read_text())
    # U1: memory 5, 4, 4 (mean 4.333), queries 3 and 5; U2 has 2 items before its queries: too few (< 3)
    assert results["users"] == [user_key("LaMP-3", "U1")]
    assert [p["prediction"] for p in results["predictions"]] == ["4.333333", "4.333333"]
    assert results["summary"][0]["metrics"]["MAE"]["estimate"] == pytest.approx((1.333333 + 0.666667) / 2, 1e-6)
    assert {"results.md", "results.png", "predictions.jsonl"} <= {p.name for p in run_dir.iterdir()}
    again = CliRunner().invoke(eval_app, args)
    assert again.exit_code == 0 and "0 examples run (0 failed), 2 already done" in again.output
    bad = CliRunner().invoke(eval_app, [*args[:-4], "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert bad.exit_code != 0 and "data file not found" in bad.output


def movie_data(root: Path) -> Path:
    write_csv(
        root / "ml1m-imdb-plots" / "movies.csv",
        ["movieId", "title", "genres", "plot"],
        [[1, "Toy Story (1995)", "Animation|Comedy", "Toys come alive."], [2, "Heat (1995)", "Crime", "A heist."]],
    )
    keywords = json.dumps([{"id": 1, "name": "toy"}, {"id": 2, "name": "friendship"}])
    genres = json.dumps([{"id": 16, "name": "Animation"}, {"id": 10751, "name": "Family"}])
    write_csv(
        root / "tmdb5000" / "tmdb_5000_movies.csv",
        ["id", "title", "release_date", "genres", "keywords", "tagline", "overview"],
        [
            [862, "Toy Story", "1995-10-30", genres, keywords, "The adventure takes off!", "Woody is jealous."],
            [19995, "Avatar", "2009-12-10", "[]", json.dumps([{"id": 3, "name": "dystopia"}]), "", "A moon, Pandora."],
        ],
    )
    write_csv(
        root / "movielens25m-links" / "links.csv", ["movieId", "imdbId", "tmdbId"], [[1, 114709, 862], [9, 1, ""]]
    )
    return root


def test_movie_documents_merge_tmdb_into_movielens_movies(tmp_path):
    docs = {d["id"]: d for d in movie_documents(movie_data(tmp_path))}
    assert set(docs) == {"ml-1", "ml-2", "tmdb-19995"}
    toy = docs["ml-1"]
    assert toy["title"] == "Toy Story (1995)" and toy["source"] == "ml1m-imdb-plots+tmdb5000"
    assert toy["text"] == (
        "Genres: Animation, Comedy, Family. Keywords: toy, friendship. The adventure takes off! Toys come alive."
    )
    assert docs["tmdb-19995"]["title"] == "Avatar (2009)" and "Keywords: dystopia." in docs["tmdb-19995"]["text"]


def test_movie_knowledge_base_is_built_once(tmp_path, monkeypatch):
    data = movie_data(tmp_path / "data")
    kb = movie_knowledge_base(data, tmp_path / "cache", WordsEmbedder())
    assert len(kb) == 3 and kb.search("toy friendship family", k=1)[0].document.title == "Toy Story (1995)"
    kb.close()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr("persona_agent.evaluation.moviekb.movie_documents", no_rebuild)
    with movie_knowledge_base(data, tmp_path / "cache", WordsEmbedder()) as again:
        assert len(again) == 3
    assert len(list((tmp_path / "cache").glob("movies-kb-*.duckdb"))) == 1


def test_movie_documents_name_a_missing_column(tmp_path):
    data = movie_data(tmp_path)
    links = next(data.rglob("links.csv"))
    links.write_text(links.read_text().replace("tmdbId", "tmdb"))
    with pytest.raises(DatasetFormatError, match="tmdbId"):
        movie_documents(data)
