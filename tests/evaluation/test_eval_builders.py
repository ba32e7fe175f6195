"""Builders on a tiny fake data dir that mirrors the real data folder's layout and raw formats (invented rows)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from persona_agent.core.errors import DataFileNotFoundError, DatasetFormatError, InvalidInputError
from persona_agent.core.lamp import load_lamp, load_oppu
from persona_agent.evaluation.amazon import build_amazon_ratings
from persona_agent.evaluation.builders import slugify_user_id
from persona_agent.evaluation.huffpost import (
    build_huffpost_categories,
    build_huffpost_headlines,
    byline_author,
    join_headline,
)
from persona_agent.evaluation.movielens import build_movielens_tags, map_tag, parse_tag_line

FIXTURES = Path(__file__).parent / "fixtures"


def article(headline: str, category: str, authors: str, day: str, desc: str = "") -> dict:
    return {
        "link": f"https://example.org/{slugify_user_id(headline)}",
        "headline": headline,
        "category": category,
        "short_description": desc or f"About {headline.lower()}.",
        "authors": authors,
        "date": day,
    }


def write_lines(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    v3 = [  # newest first, like the real file
        article("Tea Shops Bet On Oat Milk", "TASTE", "Ava Stone", "2021-06-05"),
        article("Senate Passes Rail Bill", "POLITICS", "Ava Stone, AP", "2021-06-04"),
        article("City Floods After Storm", "U.S. NEWS", "Ava Stone", "2021-06-03"),
        article("Gallery Reopens Downtown", "ARTS & CULTURE", "AVA STONE", "2021-05-01"),
        article("Yoga For Tired Backs", "WELLNESS", "Ava Stone", "2021-04-01"),
        article("Two Authors Write Together", "POLITICS", "Bo Lin and Cy Park", "2021-03-01"),
        article("Nobody Signed This", "CRIME", "", "2021-03-01"),
        article("Island Ferry Returns", "TRAVEL", "Dánica Coto, AP", "2021-02-01"),
        article("Same Day One", "SPORTS", "Tie Writer", "2020-05-05"),
        article("Same Day Two", "SPORTS", "Tie Writer", "2020-05-05"),
        article("Same Day Three", "SPORTS", "Tie Writer", "2020-05-05"),
        article("Same Day Four", "SPORTS", "Tie Writer", "2020-05-05"),
        article("Earlier Tie One", "SPORTS", "Tie Writer", "2020-01-01"),
        article("Earlier Tie Two", "SPORTS", "Tie Writer", "2020-01-02"),
    ]
    v2 = [
        article("Tea Shops Bet On Oat Milk", "FOOD & DRINK", "Someone Else", "2018-05-01"),  # duplicate headline
        article("Robots Learn To Fold Laundry", "TECH", "Ava Stone", "2018-04-02"),
        article("Toddlers And Screen Time", "PARENTS", "Ava Stone", "2018-04-01"),
        article("Harbor Swim Race", "SPORTS", "DANICA COTO, AP", "2018-03-01"),
    ]
    write_lines(root / "huffpost-news/News_Category_Dataset_v3.json", v3)
    write_lines(root / "huffpost-news/News_Category_Dataset_v2.json", v2)

    tags = [
        "1;10;Sci-Fi;1000",
        "1;11;adapted from:book;1001",
        "1;12;black comedy;1002",
        "1;13;funny;1003",
        "1;14;based on a true story;1004",
        "1;10;scifi;1005",  # same user, movie and label as line 1: one item
        "1;15;twist ending;1006",
        "1;16;dystopia;1007",  # movie 16 has no description anywhere
        "1;17;thought;provoking;1008",  # an extra ';' inside the tag
        "1;18;Violent ;1009",
        "2;10;sci-fi;2000",
        "2;11;comedy;2001",
    ]
    (root / "movielens10m-tags").mkdir(parents=True)
    (root / "movielens10m-tags/tags.dat").write_text("\n".join(tags) + "\n", encoding="utf-8")
    (root / "movielens10m-tags/movies.dat").write_text("10;Star Ferry (1999);Sci-Fi\n12;Grim Jokes (2001);Comedy\n")
    write_csv(
        root / "ml1m-imdb-plots/movies.csv",
        ["movieId", "title", "genres", "plot"],
        [
            [10, "Star Ferry (1999)", "Sci-Fi", "A ferry pilot shuttles colonists between moons."],
            [11, "Paper Kings (1995)", "Drama", "Three brothers inherit a failing paper mill."],
            [12, "Grim Jokes (2001)", "Comedy", "An undertaker moonlights as a stand-up comic."],
            [15, "Late Reveal (1997)", "Thriller", ""],  # empty plot: falls back to TMDB
        ],
    )
    write_csv(
        root / "movielens25m-links/links.csv",
        ["movieId", "imdbId", "tmdbId"],
        [[12, "0000012", 512], [14, "0000014", 501], [15, "0000015", 502], [16, "0000016", ""], [18, "0000018", 503]],
    )
    write_csv(
        root / "tmdb5000/tmdb_5000_movies.csv",
        ["budget", "id", "overview", "title"],
        [
            [0, 512, "TMDB text that loses to the IMDb plot.", "Grim Jokes"],
            [0, 501, "A nurse smuggles medicine across a wartime border.", "True Border"],
            [0, 502, "A magician's final trick rewrites the whole story.", "Late Reveal"],
            [0, 503, "Rival gangs fight over a shipping port.", "Port War"],
        ],
    )

    header = [
        "reviewerID",
        "asin",
        "reviewerName",
        "helpful",
        "reviewText",
        "overall",
        "summary",
        "unixReviewTime",
        "reviewTime",
    ]
    day = 86400
    reviews = [
        ["A1", "B01", "Al", "[0, 0]", "Great strings, bright tone.", "5.0", "Five stars", 10 * day, "x"],
        ["A1", "B02", "Al", "[0, 0]", "Capo slips on thick necks.", "2.0", "Meh", 11 * day, "x"],
        ["A1", "B03", "Al", "[0, 0]", "", "4.0", "No text", 12 * day, "x"],
        ["A1", "B04", "Al", "[0, 0]", "Stand is solid for the price.", "4.0", "Good", 12 * day, "x"],
        ["A1", "B05", "Al", "[0, 0]", "Cable died in a month.", "1.0", "Bad", 13 * day, "x"],
        ["A1", "B06", "Al", "[0, 0]", "Pedal does what it says.", "4.0", "Fine", 14 * day, "x"],
        ["A1", "B07", "Al", "[0, 0]", "Strap is comfy, clasp is weak.", "3.0", "Ok", 15 * day, "x"],
        ["A2", "B01", "Bo", "[0, 0]", "Nice.", "5.0", "Nice", 10 * day, "x"],
        ["A2", "B02", "Bo", "[0, 0]", "Fine.", "4.0", "Fine", 11 * day, "x"],
    ]
    write_csv(root / "amazon-musical-instruments/Musical_instruments_reviews.csv", header, reviews)
    return root


def test_huffpost_categories(data_dir):
    ds = build_huffpost_categories(data_dir)
    assert ds.task == "LaMP-2N"
    assert [u.user_id for u in ds.users] == ["ava-stone"]
    ava = ds.user("ava-stone")
    # v2 and v3 merged, byline variants merged, U.S. NEWS dropped, oldest first
    assert [i.output for i in ava.timeline] == [
        "parents",
        "science & technology",
        "healthy living",
        "culture & arts",
        "politics",
        "food & drink",
    ]
    assert [q.fields["headline"] for q in ava.queries] == [
        "Gallery Reopens Downtown",
        "Senate Passes Rail Bill",
        "Tea Shops Bet On Oat Milk",
    ]
    assert ava.queries[-1].input == "Tea Shops Bet On Oat Milk. About tea shops bet on oat milk."
    assert ava.queries[-1].fields["huffpost_category"] == "TASTE"  # the v3 row won over the v2 duplicate
    report = ds.report
    assert report.records_read == 18
    assert report.records_dropped == {
        "duplicate_headline": 1,
        "multi_author_byline": 1,
        "no_author": 1,
        "unmapped_category": 1,
    }
    assert report.users_seen == 3  # ava-stone, danica-coto (2 items), tie-writer
    assert report.users_skipped == {"too_few_items": 1, "too_few_items_before_first_query": 1}
    assert (report.users_kept, report.items, report.queries) == (1, 6, 3)
    assert report.users_with_at_least[5] == 2 and report.kept_users_with_at_least[5] == 1


def test_huffpost_headlines_keep_every_category(data_dir):
    ds = build_huffpost_headlines(data_dir, queries_per_user=2, min_profile=2)
    ava = ds.user("ava-stone")
    assert ava.n_items == 7  # the U.S. NEWS article counts here
    assert (ava.queries[-1].input, ava.queries[-1].output) == (
        "About tea shops bet on oat milk.",
        "Tea Shops Bet On Oat Milk",
    )
    # Tie Writer's two queries share their day with two more articles: those two are neither query nor profile
    tie = ds.user("tie-writer")
    assert [i.fields["headline"] for i in tie.profile_before(tie.queries[0])] == ["Earlier Tie One", "Earlier Tie Two"]
    assert len(tie.history) == 4


def test_bylines_and_text_helpers():
    assert byline_author("Carla K. Johnson, AP") == ("Carla K. Johnson", "")
    assert byline_author("Eric Tucker and Mary Clare Jalonick, AP") == (None, "multi_author_byline")
    assert byline_author("Sam Doe, Lee Roe, and Kim Poe") == (None, "multi_author_byline")
    assert byline_author("Ann & Bob") == (None, "multi_author_byline")
    assert byline_author("   ") == (None, "no_author")
    assert slugify_user_id("Dánica  Coto") == "danica-coto" == slugify_user_id("DANICA COTO")
    assert slugify_user_id("Lydia O'Connor") == "lydia-o-connor"
    assert join_headline("Is It Over?", "Maybe.") == "Is It Over? Maybe."
    assert join_headline("Done", "") == "Done"


def test_movielens_tags(data_dir):
    ds = build_movielens_tags(data_dir)
    (user,) = ds.users
    assert user.user_id == "1"
    assert [(i.fields["movie_id"], i.output) for i in user.timeline] == [
        ("10", "sci-fi"),
        ("11", "based on a book"),
        ("12", "dark comedy"),
        ("14", "true story"),
        ("15", "twist ending"),
        ("18", "violence"),
    ]
    by_movie = {i.fields["movie_id"]: i for i in user.timeline}
    assert by_movie["12"].input == "An undertaker moonlights as a stand-up comic."  # IMDb plot beats TMDB
    assert by_movie["12"].fields["description_source"] == "imdb"
    assert by_movie["15"].input == "A magician's final trick rewrites the whole story."  # empty plot -> TMDB
    assert by_movie["15"].fields["description_source"] == "tmdb"
    assert by_movie["10"].fields["title"] == "Star Ferry (1999)" and by_movie["10"].fields["tag"] == "Sci-Fi"
    assert by_movie["10"].timestamp is not None and by_movie["10"].timestamp.timestamp() == 1000
    assert ds.report.records_read == 12
    assert ds.report.records_dropped == {"duplicate_label": 1, "no_description": 1, "unmapped_tag": 2}
    assert ds.report.users_skipped == {"too_few_items": 1}


def test_tag_parsing_and_mapping():
    assert parse_tag_line("7;99;black comedy; amnesia;1234\n") == (7, 99, "black comedy; amnesia", 1234)
    assert parse_tag_line("7;99;;1234") == (7, 99, "", 1234)
    assert map_tag("  Science   Fiction ") == "sci-fi"
    assert map_tag("Based on a book") == "based on a book"
    assert map_tag("funny") is None
    with pytest.raises(DatasetFormatError, match=r"tags.dat: record line 3: field 'timestamp'"):
        parse_tag_line("7;99;x;soon", "tags.dat", 3)
    with pytest.raises(DatasetFormatError, match="user;movie;tag;timestamp"):
        parse_tag_line("7;99", "tags.dat", 4)


def test_amazon_ratings(data_dir):
    ds = build_amazon_ratings(data_dir)
    (user,) = ds.users
    assert user.user_id == "A1"
    assert [i.output for i in user.timeline] == ["5", "2", "4", "1", "4", "3"]
    assert user.queries[0].input == "Cable died in a month."
    assert user.timeline[0].fields["summary"] == "Five stars"
    assert ds.report.records_dropped == {"empty_text": 1}
    assert ds.report.users_skipped == {"too_few_items": 1}


def test_malformed_raw_files_name_file_record_and_field(data_dir):
    reviews = data_dir / "amazon-musical-instruments/Musical_instruments_reviews.csv"
    reviews.write_text(reviews.read_text().replace("Cable died in a month.,1.0", "Cable died in a month.,six"))
    with pytest.raises(DatasetFormatError, match=r"Musical_instruments_reviews.csv: record row 6: field 'overall'"):
        build_amazon_ratings(data_dir)
    v3 = data_dir / "huffpost-news/News_Category_Dataset_v3.json"
    v3.write_text(v3.read_text() + '{"headline": 5}\n')
    with pytest.raises(DatasetFormatError, match=r"v3.json: record line 15: field 'headline'"):
        build_huffpost_categories(data_dir)
    (data_dir / "movielens10m-tags/tags.dat").write_text("1;2;x;later\n")
    with pytest.raises(DatasetFormatError, match=r"record line 1: field 'timestamp'"):
        build_movielens_tags(data_dir)


def test_missing_data_and_bad_split(tmp_path, data_dir):
    with pytest.raises(DataFileNotFoundError, match=r"News_Category_Dataset_v3\.json"):
        build_huffpost_categories(tmp_path / "empty")
    with pytest.raises(InvalidInputError, match="queries_per_user"):
        build_amazon_ratings(data_dir, queries_per_user=0)


def test_builders_are_deterministic(data_dir):
    for build in (build_huffpost_categories, build_huffpost_headlines, build_movielens_tags, build_amazon_ratings):
        assert build(data_dir) == build(data_dir)


def _assert_no_leakage(users) -> int:
    checked = 0
    for user in users:
        for query in user.queries:
            earlier = user.profile_before(query)
            for n in (1, 3, 10):
                assert set(user.alignment_batch(query, n)) <= set(earlier)
            for seen in earlier:
                assert seen.order < query.order
                assert seen.id != query.id
                if seen.timestamp is not None and query.timestamp is not None:
                    assert seen.timestamp < query.timestamp
                checked += 1
            # nothing at or after the query's time is ever shown
            hidden = [i for i in user.timeline if i not in earlier]
            assert all(i.order >= query.order for i in hidden)
    return checked


def test_no_leakage_in_built_and_loaded_users(data_dir):
    datasets = [
        build_huffpost_categories(data_dir),
        build_huffpost_headlines(data_dir, queries_per_user=2, min_profile=2),
        build_movielens_tags(data_dir),
        build_amazon_ratings(data_dir, queries_per_user=2, min_profile=1),
        load_lamp(FIXTURES / "lamp2n_questions.json", FIXTURES / "lamp2n_outputs.json", task="LaMP-2N"),
        load_oppu(
            FIXTURES / "oppu_movie_tagging_user_top_100_history.json",
            FIXTURES / "oppu_movie_tagging_user_top_100_history_label.json",
            task="LaMP-2M",
        ),
    ]
    assert sum(_assert_no_leakage(ds.users) for ds in datasets) > 30


def test_the_data_folder_comes_from_the_caller_or_the_setting_never_the_working_directory(tmp_path, monkeypatch):
    from persona_agent.core.errors import ConfigError
    from persona_agent.evaluation.builders import data_path

    monkeypatch.delenv("PERSONA_AGENT_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="PERSONA_AGENT_DATA_DIR"):
        data_path(None)
    monkeypatch.setenv("PERSONA_AGENT_DATA_DIR", str(tmp_path))
    assert data_path(None) == tmp_path
    assert data_path("elsewhere") == Path("elsewhere")
