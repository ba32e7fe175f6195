"""The persona registry: versioning, the live pointer with optimistic locking, rollback, diff, forget, and
the migration that adds its tables to an existing store."""

from __future__ import annotations

import threading

import duckdb
import pytest

from persona_agent.core.errors import InvalidInputError, PersonaNotFoundError, VersionConflictError
from persona_agent.stores import MemoryStore
from persona_agent.stores.personas import PersonaRegistry
from persona_agent.stores.schema import SCHEMA_VERSION


@pytest.fixture
def store(tmp_path, embedder):
    with MemoryStore(tmp_path / "m.duckdb", embedder=embedder) as s:
        yield s


@pytest.fixture
def registry(store):
    return PersonaRegistry(store)


def test_versions_count_from_zero_and_keep_everything(registry):
    v0 = registry.add("alice", "persona zero", source="init")
    v1 = registry.add(
        "alice",
        "persona one",
        source="aligned",
        parent=0,
        strategy="persona_aligner",
        scores={"metric_final": 0.5},
        usage={"calls": 7},
        program={"state": {"x": 1}, "persona": None},
    )
    assert (v0.version, v0.parent, v1.version, v1.parent) == (0, None, 1, 0)
    history = registry.history("alice")
    assert [(r.version, r.text, r.source) for r in history] == [
        (0, "persona zero", "init"),
        (1, "persona one", "aligned"),
    ]
    assert history[1].scores == {"metric_final": 0.5} and history[1].usage == {"calls": 7}
    program = registry.program("alice", 1)
    assert program["state"] == {"x": 1}
    assert program["persona"] == v1.persona_dict()  # the version's persona is written into its program
    assert registry.program("alice", 0) is None
    assert registry.get("alice", "latest").version == 1
    assert registry.history("bob") == [] and registry.users() == ["alice"]


def test_bad_input_is_refused_and_nothing_is_written(registry):
    registry.add("alice", "zero")
    for kwargs, field in (
        ({"text": "  "}, "text"),
        ({"text": "x", "parent": 5}, "parent"),
        ({"text": "x", "source": "magic"}, "source"),
        ({"text": "x", "scores": {"a": object()}}, "scores"),
    ):
        with pytest.raises(InvalidInputError) as info:
            registry.add("alice", **kwargs)
        assert info.value.field == field
    with pytest.raises(InvalidInputError):
        registry.add("not a valid id", "x")
    assert len(registry.history("alice")) == 1
    with pytest.raises(InvalidInputError):
        registry.resolve("alice", "newest")


def test_promote_moves_the_live_pointer_and_bumps_the_revision(registry):
    with pytest.raises(PersonaNotFoundError):
        registry.get("alice")  # nothing live yet
    for text in ("zero", "one", "two"):
        registry.add("alice", text)
    first = registry.promote("alice", 0)
    assert (first.version, first.revision) == (0, 1)
    second = registry.promote("alice", 2, expected_revision=1)
    assert (second.version, second.revision) == (2, 2)
    assert registry.get("alice").text == "two" and registry.get("alice", "champion").version == 2
    assert [(e.action, e.from_version, e.to_version) for e in registry.events("alice")] == [
        ("promote", None, 0),
        ("promote", 0, 2),
    ]
    with pytest.raises(PersonaNotFoundError):
        registry.promote("alice", 9)


def test_a_stale_revision_is_a_conflict_and_changes_nothing(registry):
    registry.add("alice", "zero")
    registry.add("alice", "one")
    seen = registry.promote("alice", 0)  # a client reads revision 1 ...
    registry.promote("alice", 1, expected_revision=seen.revision)  # ... someone else moves it to 2
    with pytest.raises(VersionConflictError) as info:
        registry.promote("alice", 0, expected_revision=seen.revision)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert registry.live("alice").version == 1
    with pytest.raises(VersionConflictError):
        registry.rollback("alice", expected_revision=seen.revision)
    assert len(registry.history("alice")) == 2


def test_concurrent_promotes_with_the_same_revision_let_exactly_one_win(registry):
    for text in ("zero", "one", "two", "three", "four"):
        registry.add("alice", text)
    base = registry.promote("alice", 0).revision
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt(version: int) -> None:
        barrier.wait()
        try:
            registry.promote("alice", version, expected_revision=base)
            outcomes.append("ok")
        except VersionConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(v,)) for v in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "ok"]
    assert registry.live("alice").revision == base + 1


def test_rollback_restores_the_previous_live_version_as_a_new_version(registry):
    registry.add("alice", "zero", source="init", program={"state": {"v": 0}})
    registry.promote("alice", 0)
    registry.add("alice", "one", source="aligned", parent=0, program={"state": {"v": 1}})
    registry.promote("alice", 1)
    record, state = registry.rollback("alice")
    assert (record.version, record.source, record.parent, record.text) == (2, "rollback", 0, "zero")
    assert (state.version, state.revision) == (2, 3)
    program = registry.program("alice", 2)
    assert program["state"] == {"v": 0} and program["persona"]["version"] == 2
    assert registry.events("alice")[-1].action == "rollback"
    # an explicit target
    record, _ = registry.rollback("alice", to=1)
    assert (record.version, record.parent, record.text) == (3, 1, "one")


def test_rollback_without_an_earlier_live_version_is_bad_input(registry):
    registry.add("alice", "zero")
    registry.promote("alice", 0)
    with pytest.raises(InvalidInputError) as info:
        registry.rollback("alice")
    assert info.value.field == "to"
    assert len(registry.history("alice")) == 1
    with pytest.raises(PersonaNotFoundError):
        registry.rollback("bob")


def test_diff_is_a_unified_diff_between_versions(registry):
    registry.add("alice", "## User profile\nLikes sport.\n\n## Agent instructions\nBe brief.\n")
    registry.add("alice", "## User profile\nLikes opera.\n\n## Agent instructions\nBe brief.\n", parent=0)
    registry.promote("alice", 1)
    diff = registry.diff("alice", 0)
    assert diff.startswith("--- alice@v0\n+++ alice@v1\n")
    assert "-Likes sport.\n" in diff and "+Likes opera.\n" in diff and " Be brief.\n" in diff
    assert registry.diff("alice", 1, "live") == ""


def test_diff_keeps_lines_apart_when_the_last_line_has_no_newline(registry):
    registry.add("alice", "## User profile\nLikes sport.")
    registry.add("alice", "## User profile\nLikes opera.", parent=0)
    diff = registry.diff("alice", 0, 1)
    assert diff.splitlines()[-2:] == ["-Likes sport.", "+Likes opera."]
    assert diff.endswith("\n")


def test_ensure_live_creates_the_initial_version_once_under_concurrency(registry):
    calls = []

    def initial():
        calls.append(1)
        return "initial persona", {"state": {}}

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(registry.ensure_live("alice", initial))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(calls) == 1 and sum(created for _, created in results) == 1
    assert [r.version for r in registry.history("alice")] == [0]
    assert registry.live("alice").version == 0


def test_forget_removes_one_user_only(registry):
    for user in ("alice", "bob"):
        registry.add(user, f"{user} zero")
        registry.add(user, f"{user} one", parent=0)
        registry.promote(user, 1)
    assert registry.forget("alice") == {"personas": 2, "live": 1, "events": 1}
    assert registry.history("alice") == [] and registry.live("alice") is None and registry.events("alice") == []
    assert len(registry.history("bob")) == 2 and registry.live("bob").version == 1
    assert registry.forget("alice") == {"personas": 0, "live": 0, "events": 0}


def test_a_store_from_before_the_registry_gets_its_tables_on_open(tmp_path, embedder):
    path = tmp_path / "old.duckdb"
    with MemoryStore(path, embedder=embedder) as store:
        store.add_interaction("alice", "hello", "hi")
    con = duckdb.connect(str(path))  # make it look like a schema-1 database
    con.execute("DROP TABLE personas")
    con.execute("DROP TABLE persona_live")
    con.execute("DROP TABLE persona_events")
    con.execute("ALTER TABLE interactions DROP COLUMN content_hash")
    con.execute("DROP TABLE token_revocations")
    con.execute("DELETE FROM schema_version WHERE version > 1")
    con.close()
    with MemoryStore(path, embedder=embedder) as store:
        registry = PersonaRegistry(store)
        registry.add("alice", "zero")
        assert registry.history("alice")[0].text == "zero" and store.count("alice") == 1
        version = store.cursor().execute("SELECT max(version) FROM schema_version").fetchall()[0][0]
        assert version == SCHEMA_VERSION == 4
