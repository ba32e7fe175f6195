"""Loaders on hand-written fixtures in LaMP's and OPPU's formats: fields, order, golds, round trips, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from persona_agent.core.errors import DataFileNotFoundError, DatasetFormatError, InvalidInputError
from persona_agent.core.lamp import load_lamp, load_oppu, parse_date, to_lamp, write_lamp

FIXTURES = Path(__file__).parent / "fixtures"


def test_lamp_2n_profile_is_date_ordered_and_gold_joined():
    ds = load_lamp(FIXTURES / "lamp2n_questions.json", FIXTURES / "lamp2n_outputs.json", task="LaMP-2N")
    assert [u.user_id for u in ds.users] == ["210", "211"]
    u = ds.user("210")
    (query,) = u.queries
    assert query.output == "culture & arts"
    assert query.input == "A town council votes to turn its old rail depot into a public library."
    assert query.fields["question"].startswith("Which category")
    # by date; the two 2016-03-02 items are simultaneous and keep file order
    assert [(i.id, i.order) for i in u.history] == [("2100", 0), ("2101", 1), ("2102", 1), ("2103", 2)]
    first = u.history[0]
    assert (first.input, first.output, first.fields["title"]) == (
        "A family bakery took first place for its rye loaf.",
        "food & drink",
        "Bakery Wins Regional Prize",
    )
    assert first.timestamp is not None and first.timestamp.year == 2015
    assert [i.id for i in u.profile_before(query)] == ["2100", "2101", "2102", "2103"]
    # undated profile: file order, no timestamps
    v = ds.user("211")
    assert [(i.id, i.order, i.timestamp) for i in v.history] == [("2110", 0, None), ("2111", 1, None)]
    assert v.queries[0].order == 2 and v.queries[0].output == "travel"
    assert ds.report.users_kept == 2 and ds.report.queries == 2 and ds.report.items == 8


def test_lamp_3_numbers_become_labels():
    ds = load_lamp(FIXTURES / "lamp3_questions.json", FIXTURES / "lamp3_outputs.json", task="LaMP_3")
    u = ds.user("3001")
    assert [i.output for i in u.history] == ["5", "3", "2"]
    assert [i.id for i in u.history] == ["30010", "30011", "30012"]
    assert u.queries[0].output == "4"
    assert u.queries[0].input == "The strap broke after a week, but the seller replaced it quickly."


def test_lamp_1_inline_output_and_optional_abstract():
    ds = load_lamp(FIXTURES / "lamp1_questions.json", task="LaMP-1")
    u = ds.user("1-7")
    assert u.queries[0].output == "[1]"
    assert u.queries[0].input.startswith("For an author")  # LaMP-1 keeps the whole question (it holds the options)
    assert [(i.input, i.output) for i in u.history] == [
        ("Approximate Degree Counting", "We bound the error of a one-pass degree estimator."),
        ("Reservoir Sampling Revisited", ""),
    ]


def test_lamp_4_headlines():
    ds = load_lamp(FIXTURES / "lamp4_questions.json", FIXTURES / "lamp4_outputs.json", task="LaMP-4")
    u = ds.user("4-1")
    assert u.queries[0].input == "Volunteers planted four hundred oak saplings along the river on Saturday."
    assert u.queries[0].output == "Hundreds Of Oaks Planted On Riverbank"
    assert [i.output for i in u.history] == ["Library Extends Hours For Finals", "Goat Grounds Flights For An Hour"]


def test_oppu_queries_are_simultaneous_and_golds_come_from_the_label_file():
    ds = load_oppu(
        FIXTURES / "oppu_movie_tagging_user_top_100_history.json",
        FIXTURES / "oppu_movie_tagging_user_top_100_history_label.json",
        task="movie_tagging",
    )
    assert ds.task == "LaMP-2M"
    u = ds.user("u-17")
    assert [q.output for q in u.queries] == ["sci-fi", "romance"]
    assert u.queries[1].input == "A widower writes letters to the lighthouse keeper he once loved."
    # OPPU answers each query from the profile alone: q1 is not in q2's profile
    assert [i.id for i in u.profile_before("q2")] == ["m1", "m2", "m3"]
    assert [i.id for i in u.first_alignment_batch(2)] == ["m2", "m3"]
    assert ds.user("u-42").queries[0].input == "An accountant discovers the ledger predicts the future."


def test_oppu_inline_gold_and_index_user_ids():
    ds = load_oppu(FIXTURES / "oppu_product_rating_user_others.json", task="LaMP-3")
    (u,) = ds.users
    assert u.user_id == "0" and u.queries[0].output == "3" and len(u.history) == 2


@pytest.mark.parametrize(
    ("questions", "outputs", "task"),
    [
        ("lamp2n_questions.json", "lamp2n_outputs.json", "LaMP-2N"),
        ("lamp3_questions.json", "lamp3_outputs.json", "LaMP-3"),
        ("lamp1_questions.json", None, "LaMP-1"),
        ("lamp4_questions.json", "lamp4_outputs.json", "LaMP-4"),
    ],
)
def test_lamp_write_then_load_is_the_same_dataset(tmp_path, questions, outputs, task):
    first = load_lamp(FIXTURES / questions, FIXTURES / outputs if outputs else None, task=task)
    write_lamp(first, tmp_path / "q.json", tmp_path / "o.json")
    again = load_lamp(tmp_path / "q.json", tmp_path / "o.json", task=task)
    assert again.users == first.users
    assert json.loads((tmp_path / "o.json").read_text())["task"] == first.users[0].task.replace("-", "_")


def test_to_lamp_gives_one_question_per_query_with_only_earlier_profile():
    ds = load_oppu(
        FIXTURES / "oppu_movie_tagging_user_top_100_history.json",
        FIXTURES / "oppu_movie_tagging_user_top_100_history_label.json",
        task="LaMP-2M",
    )
    questions, outputs = to_lamp(ds)
    assert [q["id"] for q in questions] == ["q1", "q2", "q9"]
    assert [p["id"] for p in questions[1]["profile"]] == ["m1", "m2", "m3"]
    assert questions[0]["profile"][0] == {
        "id": "m1",
        "description": questions[0]["profile"][0]["description"],
        "tag": "sci-fi",
    }
    assert outputs == {
        "task": "LaMP_2M",
        "golds": [
            {"id": "q1", "output": "sci-fi"},
            {"id": "q2", "output": "romance"},
            {"id": "q9", "output": "fantasy"},
        ],
    }


def test_parse_date_forms():
    assert parse_date("2019-05-01").isoformat() == "2019-05-01T00:00:00+00:00"
    assert parse_date("2019").year == 2019 and parse_date(2019).year == 2019
    assert parse_date("2019-05").month == 5
    assert parse_date(0).year == 1970
    assert parse_date("yesterday") is None and parse_date(None) is None and parse_date("2019-13-01") is None


# --- malformed input: the error names the file, the record and the field --------------------------------


def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def question(**changes: object) -> dict:
    q = {"id": "q7", "input": "review: fine", "profile": [{"id": "p1", "text": "good", "score": "4"}], "output": "4"}
    q.update(changes)
    return q


def raises(path: Path, *parts: str, **kwargs: object) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as info:
        load_lamp(path, kwargs.get("outputs"), task=kwargs.get("task", "LaMP-3"))  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message or str(kwargs.get("outputs")) in message
    for part in parts:
        assert part in message, message
    assert isinstance(info.value, InvalidInputError) and isinstance(info.value, ValueError)
    return info.value


def test_missing_profile_field_names_file_record_and_field(tmp_path):
    bad = question(profile=[{"id": "p1", "text": "good", "score": "4"}, {"id": "p2", "text": "meh"}])
    path = write(tmp_path, "dev_questions.json", [question(id="q0"), bad])
    err = raises(path, "record #1 (id 'q7')", "'profile[1].score'", "missing")
    assert err.field == "profile[1].score" and err.record == "#1 (id 'q7')" and err.path == str(path)


def test_non_string_field(tmp_path):
    path = write(tmp_path, "q.json", [question(profile=[{"id": "p1", "text": ["not", "text"], "score": "4"}])])
    raises(path, "'profile[0].text'", "not a string")


def test_bad_json_root_profile_and_date(tmp_path):
    raises(write(tmp_path, "a.json", "[{"), "not valid JSON")
    raises(write(tmp_path, "b.json", {"id": "q"}), "'(root)'", "list of questions")
    raises(write(tmp_path, "c.json", [question(profile="none")]), "'profile'", "list")
    raises(
        write(tmp_path, "d.json", [question(profile=[{"id": "p", "text": "t", "score": "1", "date": "soon"}])]),
        "'profile[0].date'",
        "not a date",
    )


def test_gold_problems(tmp_path):
    no_gold = question()
    del no_gold["output"]
    raises(write(tmp_path, "a.json", [no_gold]), "'output'", "no output/gold")
    raises(write(tmp_path, "b.json", [question(output="7")]), "'output'", "not one of the LaMP-3 labels")
    q = write(tmp_path, "c.json", [no_gold])
    raises(q, "'task'", "expected LaMP_3", outputs=write(tmp_path, "o1.json", {"task": "LaMP_4", "golds": []}))
    raises(
        q,
        "no gold for id 'q7'",
        outputs=write(tmp_path, "o2.json", {"task": "LaMP_3", "golds": [{"id": "x", "output": "1"}]}),
    )
    raises(q, "'golds[].id/output'", outputs=write(tmp_path, "o3.json", {"task": "LaMP_3", "golds": [{"id": "q7"}]}))


def test_duplicate_question_ids(tmp_path):
    raises(write(tmp_path, "q.json", [question(), question()]), "unique")


def test_oppu_errors_name_the_user(tmp_path):
    path = write(tmp_path, "user_top_100_history.json", [{"user_id": "u9", "profile": [], "query": []}])
    with pytest.raises(DatasetFormatError, match=r"record #0 \(user 'u9'\).*'query'.*non-empty"):
        load_oppu(path, task="LaMP-3")
    path = write(tmp_path, "u2.json", [{"profile": [], "query": [{"id": "z", "input": "review: ok"}]}])
    with pytest.raises(DatasetFormatError, match=r"query\[0\].*'output'"):
        load_oppu(path, task="LaMP-3")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(DataFileNotFoundError, match=r"nope\.json"):
        load_lamp(tmp_path / "nope.json", task="LaMP-3")


def test_profile_item_reusing_the_query_id(tmp_path):
    path = write(tmp_path, "q.json", [question(profile=[{"id": "q7", "text": "t", "score": "1"}])])
    raises(path, "record #0 (id 'q7')", "duplicate item ids")


def test_built_timestamps_survive_the_lamp_round_trip(tmp_path):
    from datetime import UTC, datetime

    from persona_agent.core.records import BuildReport, EvalDataset, EvalUser, Item

    def item(i: str, order: int, seconds: int) -> Item:
        ts = datetime.fromtimestamp(seconds, tz=UTC)
        return Item(id=i, input=f"text {i}", output="4", order=order, timestamp=ts)

    user = EvalUser(
        user_id="u", task="LaMP-3", history=(item("a", 0, 100), item("b", 1, 200)), queries=(item("q", 2, 300),)
    )
    report = BuildReport(task="LaMP-3", source="t", records_read=3, users_seen=1, users_kept=1, items=3, queries=1)
    write_lamp(EvalDataset(task="LaMP-3", users=(user,), report=report), tmp_path / "q.json", tmp_path / "o.json")
    again = load_lamp(tmp_path / "q.json", tmp_path / "o.json", task="LaMP-3").user("q")
    assert [(i.id, i.order, i.timestamp) for i in again.history] == [(i.id, i.order, i.timestamp) for i in user.history]
    assert again.queries[0].input == "text q" and again.queries[0].output == "4"
