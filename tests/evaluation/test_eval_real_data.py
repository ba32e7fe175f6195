"""The builders on the real public data (the PERSONA_AGENT_DATA_DIR folder): counts in the ballpark its SOURCES.md
reports. Skipped where the setting names no folder with the data."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_agent.core.config import Settings
from persona_agent.evaluation.amazon import build_amazon_ratings
from persona_agent.evaluation.huffpost import build_huffpost_categories, build_huffpost_headlines
from persona_agent.evaluation.movielens import build_movielens_tags

DATA = Settings().data_dir or Path("/nonexistent")


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "SOURCES.md").is_file(), reason="PERSONA_AGENT_DATA_DIR names no data folder")
def test_builders_on_real_data():
    news = build_huffpost_categories(DATA)
    headlines = build_huffpost_headlines(DATA)
    movies = build_movielens_tags(DATA)
    reviews = build_amazon_ratings(DATA)
    for ds in (news, headlines, movies, reviews):
        for user in ds.users:
            for query in user.queries:
                assert all(item.order < query.order for item in user.profile_before(query))
                assert len(user.first_alignment_batch(3)) == 3

    # SOURCES.md: v3+v2 merged 13,447 articles by 1,916 bylines; we also drop repeats inside a file,
    # multi-author and empty bylines.
    assert 13_300 <= news.report.records_read - news.report.records_dropped["duplicate_headline"] <= 13_450
    assert 60 <= news.report.users_with_at_least[20] <= 90
    assert news.report.users_kept >= 100 and news.report.queries == 3 * news.report.users_kept
    assert 70 <= headlines.report.users_with_at_least[20] <= 100

    # SOURCES.md: exact tags 3,741 by 760 users; with synonyms ~4,595 by 849 (>=5: 184, >=10: 103, >=20: 44).
    usable = movies.report.records_read - sum(movies.report.records_dropped.values())
    assert 4_300 <= usable <= 4_700
    assert 800 <= movies.report.users_seen <= 900
    assert 170 <= movies.report.users_with_at_least[5] <= 200
    assert 90 <= movies.report.users_with_at_least[10] <= 115
    assert 35 <= movies.report.users_with_at_least[20] <= 50

    # SOURCES.md: 10,261 reviews by 1,429 users, 7 empty; >=10: 188, >=20: 29.
    assert reviews.report.records_read == 10_261 and reviews.report.records_dropped == {"empty_text": 7}
    assert reviews.report.users_seen == 1_429
    assert reviews.report.users_with_at_least[10] == 188 and reviews.report.users_with_at_least[20] == 29
