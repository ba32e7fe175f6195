"""EvalUser: the timeline invariants and the strictly-earlier rule for profiles and alignment batches."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.records import BuildReport, EvalDataset, EvalUser, Item


def item(i: str, order: int, day: int | None = None) -> Item:
    ts = datetime(2020, 1, day, tzinfo=UTC) if day is not None else None
    return Item(id=i, input=f"in {i}", output=f"out {i}", order=order, timestamp=ts)


def user() -> EvalUser:
    # a(1) b(2) c(2) d(3) | q1(4) q2(4) q3(5): q1 and q2 are simultaneous.
    hist = (item("a", 0, 1), item("b", 1, 2), item("c", 1, 2), item("d", 2, 3))
    return EvalUser(
        user_id="u", task="LaMP-3", history=hist, queries=(item("q1", 3, 4), item("q2", 3, 4), item("q3", 4, 5))
    )


def ids(items) -> list[str]:
    return [i.id for i in items]


def test_profile_before_is_strictly_earlier():
    u = user()
    assert ids(u.profile_before("q1")) == ["a", "b", "c", "d"]
    assert ids(u.profile_before("q2")) == ["a", "b", "c", "d"]  # q1 is simultaneous: not shown
    assert ids(u.profile_before("q3")) == ["a", "b", "c", "d", "q1", "q2"]
    assert ids(u.profile_before("c")) == ["a"]  # b shares c's time
    assert u.profile_before(u.queries[0]) == u.profile_before("q1")


def test_alignment_batch_is_the_n_just_before():
    u = user()
    assert ids(u.alignment_batch("q1", n=3)) == ["b", "c", "d"]
    assert ids(u.first_alignment_batch(2)) == ["c", "d"]
    assert ids(u.alignment_batch("q3")) == ["d", "q1", "q2"]
    assert u.alignment_batch("q1", n=0) == ()
    assert ids(u.alignment_batch("b", n=5)) == ["a"]
    with pytest.raises(InvalidInputError):
        u.alignment_batch("q1", n=-1)


def test_unknown_or_foreign_query_is_rejected():
    u = user()
    with pytest.raises(InvalidInputError, match="no such item"):
        u.profile_before("zzz")
    impostor = item("q1", 0, 1)
    with pytest.raises(InvalidInputError, match="is not the item"):
        u.profile_before(impostor)


def test_timeline_must_be_ordered_and_consistent():
    with pytest.raises(ValidationError, match="not time-ordered"):
        EvalUser(user_id="u", task="t", history=(item("a", 2),), queries=(item("q", 1),))
    with pytest.raises(ValidationError, match="disagree"):
        EvalUser(user_id="u", task="t", history=(item("a", 0, 1),), queries=(item("q", 1, 1),))
    with pytest.raises(ValidationError, match="duplicate"):
        EvalUser(user_id="u", task="t", history=(item("a", 0),), queries=(item("a", 1),))
    with pytest.raises(ValidationError):
        EvalUser(user_id="u", task="t", history=(item("a", 0),), queries=())


def test_items_are_frozen_and_naive_times_are_utc():
    it = Item(id="x", input="i", output="o", order=0, timestamp=datetime(2020, 1, 1))
    assert it.timestamp is not None and it.timestamp.tzinfo is UTC
    with pytest.raises(ValidationError):
        it.output = "changed"  # type: ignore[misc]


def test_dataset_round_trips_through_json():
    report = BuildReport(task="LaMP-3", source="test", records_read=7, users_seen=1, users_kept=1, items=7, queries=3)
    ds = EvalDataset(task="LaMP-3", users=(user(),), report=report)
    again = EvalDataset.model_validate_json(ds.model_dump_json())
    assert again == ds
    assert ds.user("u").n_items == 7 and ds.n_queries == 3
    assert "records read 7" in report.summary()
    with pytest.raises(InvalidInputError):
        ds.user("nobody")
