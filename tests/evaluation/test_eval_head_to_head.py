"""PersonaAgent against each method query by query: scores per example, the sign test, and the counts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from persona_agent.core.errors import InvalidInputError
from persona_agent.core.tasks import LAMP_2N, LAMP_3, LAMP_4
from persona_agent.evaluation.head_to_head import Matchup, count_signs, example_scores, head_to_head, sign_test


def test_count_signs_treats_float_rounding_as_a_tie():
    # 0.1 + 0.2 - 0.3 is 5.6e-17, not 0: two equal ROUGE scores computed in different orders must tie
    assert count_signs([0.1 + 0.2 - 0.3, 0.5, -0.25, 0.0, -1e-12]) == (1, 1)
    assert count_signs([]) == (0, 0)


def test_sign_test_against_hand_computed_values():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(2 / 32)  # all 5 discordant pairs one way
    assert sign_test(1, 4) == pytest.approx(2 * (1 + 5) / 32)
    assert sign_test(3, 3) == 1.0
    assert sign_test(0, 10) == pytest.approx(2 / 1024)
    with pytest.raises(ValueError):
        sign_test(-1, 2)


@given(st.integers(0, 60), st.integers(0, 60))
def test_sign_test_is_symmetric_and_a_probability(wins, losses):
    p = sign_test(wins, losses)
    assert p == sign_test(losses, wins) and 0 < p <= 1
    if wins >= losses:  # one more win on the winning side is never weaker evidence
        assert sign_test(wins + 1, losses) <= p


def test_example_scores_follow_the_official_metrics():
    # an off-list label is wrong even against an off-list gold; surrounding spaces are normalized away
    assert example_scores(LAMP_2N, [" politics ", "weather", "sports"], ["politics", "sports", "politics"]) == [
        1.0,
        0.0,
        0.0,
    ]
    # minus the absolute error; a non-numeric rating counts as the farther of 1 and 5 (gold 2 -> 5, error 3)
    assert example_scores(LAMP_3, ["4", "", "1.5"], ["5", "2", "2"]) == [-1.0, -3.0, -0.5]
    (rouge_l,) = example_scores(LAMP_4, ["city approves bike lanes"], ["council approves bike lanes"])
    assert rouge_l == pytest.approx(0.75)


def test_a_non_numeric_rating_gold_is_refused_as_by_the_metrics():
    with pytest.raises(InvalidInputError, match="golds"):
        example_scores(LAMP_3, ["4"], ["four"])


def _row(user: str, query: str, prediction: str | None, gold: str) -> dict:
    return {"user": user, "query_id": query, "prediction": prediction, "gold": gold}


def test_wins_losses_and_ties_on_the_queries_both_answered():
    gold = {"q1": "politics", "q2": "sports", "q3": "business", "q4": "politics", "q5": "sports"}
    mine = [
        _row("u", q, p, gold[q])
        for q, p in [("q1", "politics"), ("q2", "sports"), ("q3", None), ("q4", "politics"), ("q5", "sports")]
    ]
    rag = [
        _row("u", q, p, gold[q]) for q, p in [("q1", "sports"), ("q2", "sports"), ("q3", "business"), ("q4", "sports")]
    ]
    floor = [_row("u", q, gold[q], gold[q]) for q in gold]
    result = head_to_head(LAMP_2N, {"majority": floor, "rag": rag, "persona_agent": mine})
    # q1, q4 won; q3 lost (a failed answer scores as wrong); q2 tied; q5 unanswered by RAG: not compared
    assert result == [Matchup("majority", 5, 0, 1, 4, 1.0), Matchup("rag", 4, 2, 1, 1, 1.0)]
    assert head_to_head(LAMP_2N, {"rag": rag}) is None


def test_rating_ties_are_equal_errors():
    mine = [_row("u", "q1", "3", "4"), _row("u", "q2", "4", "4")]
    other = [_row("u", "q1", "5", "4"), _row("u", "q2", "2", "4")]
    assert head_to_head(LAMP_3, {"persona_agent": mine, "nearest": other}) == [Matchup("nearest", 2, 1, 0, 1, 1.0)]


def test_answers_under_different_profile_builds_are_left_out_only_where_both_read_the_profile():
    """A resumed run that rebuilt a user's profile made its later answers under another profile: PersonaAgent
    meets a profile-reading method only on answers of the same build, a floor on every query."""
    gold = {"q1": "politics", "q2": "sports", "q3": "crime"}

    def rows(method: str, answers: dict[str, str], rebuilt: set[str] = frozenset()) -> list[dict]:
        out = []
        for query, prediction in answers.items():
            row = {"method": method, **_row("u", query, prediction, gold[query])}
            out.append({**row, "profile_generation": 2} if query in rebuilt else row)
        return out

    mine = rows("persona_agent", {"q1": "politics", "q2": "politics", "q3": "crime"}, rebuilt={"q2", "q3"})
    unaligned = rows("no_alignment", {"q1": "sports", "q2": "sports", "q3": "crime"}, rebuilt={"q3"})
    floor = rows("majority", {"q1": "sports", "q2": "sports", "q3": "sports"}, rebuilt={"q1", "q2", "q3"})
    matchups = head_to_head(LAMP_2N, {"persona_agent": mine, "no_alignment": unaligned, "majority": floor})
    by_method = {m.method: m for m in matchups}
    # q1 (build 1 both) and q3 (build 2 both) compare; q2 (build 2 against 1) is left out
    assert (by_method["no_alignment"].n, by_method["no_alignment"].wins, by_method["no_alignment"].ties) == (2, 1, 1)
    assert by_method["no_alignment"].profile_mismatch == 1
    # the floor reads no profile, so its tag (whatever it is) never splits a pair
    assert (by_method["majority"].n, by_method["majority"].profile_mismatch) == (3, 0)
    assert (by_method["majority"].wins, by_method["majority"].losses) == (2, 1)
