"""MovieLens-10M user tags joined to plot text, as LaMP-2M (movie tagging onto LaMP's 15 tags).

Source files under `data_dir` (see SOURCES.md):
- `movielens10m-tags/tags.dat`: `user;movie;tag;timestamp`. 44 lines hold an extra ';' inside the tag,
  so a line is read as field 1 = user, field 2 = movie, last field = timestamp, everything between = tag.
- `movielens10m-tags/movies.dat` (`movie;title;genres`): titles, kept as a field only (optional file).
- Descriptions: the IMDb plot from `ml1m-imdb-plots/movies.csv` (ML-1M ids) when present, else the TMDB
  overview from `tmdb5000/tmdb_5000_movies.csv` through `movielens25m-links/links.csv` (movieId -> tmdbId).
  Tag applications on movies with neither are dropped.

A tag counts when, after `normalize_tag` (lower case, whitespace collapsed), it is one of LaMP's 15 tags
or a key of `TAG_SYNONYMS`. The synonym map only holds spellings of the same concept (no "funny" ->
comedy, no "satire" -> social commentary): a looser map would put our words in the users' mouths.
One user tagging one movie twice with the same label ("sci-fi" and "scifi") is one item (the earliest).
Input is the description, output the LaMP tag, time the tag's Unix timestamp (seconds).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from persona_agent.core.errors import DatasetFormatError
from persona_agent.core.lamp import require_file
from persona_agent.core.tasks import LAMP_2M, MOVIE_TAGS
from persona_agent.evaluation.builders import LampBuilder, RawItem, csv_rows, data_path

TAGS_FILE = "movielens10m-tags/tags.dat"
TITLES_FILE = "movielens10m-tags/movies.dat"
IMDB_PLOTS_FILE = "ml1m-imdb-plots/movies.csv"
TMDB_FILE = "tmdb5000/tmdb_5000_movies.csv"
LINKS_FILE = "movielens25m-links/links.csv"

# normalized MovieLens tag -> LaMP-2M tag (the 15 tags themselves match without an entry).
TAG_SYNONYMS: dict[str, str] = {
    "scifi": "sci-fi",
    "sci fi": "sci-fi",
    "science fiction": "sci-fi",
    "adapted from:book": "based on a book",
    "based on book": "based on a book",
    "based on a novel": "based on a book",
    "based on novel": "based on a book",
    "book adaptation": "based on a book",
    "black comedy": "dark comedy",
    "dark humor": "dark comedy",
    "dark humour": "dark comedy",
    "black humor": "dark comedy",
    "black humour": "dark comedy",
    "based on a true story": "true story",
    "based on true story": "true story",
    "based upon a true story": "true story",
    "thought provoking": "thought-provoking",
    "plot twist": "twist ending",
    "surprise ending": "twist ending",
    "dystopian": "dystopia",
    "dystopian future": "dystopia",
    "future dystopia": "dystopia",
    "future dystopias": "dystopia",
    "dystopic future": "dystopia",
    "psychological": "psychology",
    "violent": "violence",
    "ultra-violence": "violence",
    "ultraviolence": "violence",
    "graphic violence": "violence",
    "romantic": "romance",
    "love story": "romance",
    "action packed": "action",
    "action-packed": "action",
    "social criticism": "social commentary",
}


def normalize_tag(tag: str) -> str:
    """Lower case with whitespace collapsed: "  Sci-Fi " and "sci-fi" are one tag."""
    return " ".join(tag.lower().split())


def map_tag(tag: str) -> str | None:
    """The LaMP-2M tag a MovieLens tag stands for, or None when it stands for none of the 15."""
    normalized = normalize_tag(tag)
    if normalized in MOVIE_TAGS:
        return normalized
    return TAG_SYNONYMS.get(normalized)


def parse_tag_line(line: str, path: Path | str = TAGS_FILE, line_no: int = 0) -> tuple[int, int, str, int]:
    """(user, movie, tag, timestamp) from one tags.dat line; a ';' inside the tag stays in the tag."""
    parts = line.rstrip("\r\n").split(";")
    if len(parts) < 4:
        raise DatasetFormatError(path, f"line {line_no}", "(line)", line[:60], "expected user;movie;tag;timestamp")
    values: list[int] = []
    for name, raw in (("user", parts[0]), ("movie", parts[1]), ("timestamp", parts[-1])):
        try:
            values.append(int(raw))
        except ValueError as exc:
            raise DatasetFormatError(path, f"line {line_no}", name, raw, "not an integer") from exc
    return values[0], values[1], ";".join(parts[2:-1]), values[2]


def _int(path: Path, row_no: int, name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise DatasetFormatError(path, f"row {row_no}", name, raw, "not an integer") from exc


def read_descriptions(data_dir: Path | str | None = None) -> dict[int, tuple[str, str]]:
    """movieId -> (description, source): the IMDb plot for ML-1M ids, else the TMDB overview via links.csv."""
    root = data_path(data_dir)
    described: dict[int, tuple[str, str]] = {}
    tmdb_path = root / TMDB_FILE
    overviews: dict[int, str] = {}
    for row_no, row in csv_rows(tmdb_path, ("id", "overview")):
        text = " ".join(row["overview"].split())
        if text:
            overviews[_int(tmdb_path, row_no, "id", row["id"])] = text
    links_path = root / LINKS_FILE
    for row_no, row in csv_rows(links_path, ("movieId", "tmdbId")):
        if row["tmdbId"].strip():
            overview = overviews.get(_int(links_path, row_no, "tmdbId", row["tmdbId"]))
            if overview:
                described[_int(links_path, row_no, "movieId", row["movieId"])] = (overview, "tmdb")
    plots_path = root / IMDB_PLOTS_FILE
    for row_no, row in csv_rows(plots_path, ("movieId", "plot")):
        text = " ".join(row["plot"].split())
        if text:  # the IMDb plot wins over the TMDB overview
            described[_int(plots_path, row_no, "movieId", row["movieId"])] = (text, "imdb")
    return described


def read_titles(data_dir: Path | str | None = None) -> dict[int, str]:
    """movieId -> title from movies.dat; empty when the file is absent (titles are only informative)."""
    path = data_path(data_dir) / TITLES_FILE
    if not path.is_file():
        return {}
    titles: dict[int, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip("\r\n").split(";")
            if len(parts) >= 3 and parts[0].isdigit():
                titles[int(parts[0])] = ";".join(parts[1:-1])
    return titles


def read_tag_rows(root: Path) -> tuple[list[RawItem], int, Counter[str]]:
    """Every usable tag application as a row (input = description, output = LaMP tag), lines read, drops."""
    tags_path = require_file(root / TAGS_FILE)
    descriptions = read_descriptions(root)
    titles = read_titles(root)
    dropped: Counter[str] = Counter()
    candidates: list[tuple[int, int, int, int, str, str]] = []  # (timestamp, line, user, movie, tag, label)
    read = 0
    with tags_path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            read += 1
            user, movie, tag, stamp = parse_tag_line(line, tags_path, line_no)
            label = map_tag(tag)
            if label is None:
                dropped["unmapped_tag"] += 1
            elif movie not in descriptions:
                dropped["no_description"] += 1
            else:
                candidates.append((stamp, line_no, user, movie, tag, label))
    rows: list[RawItem] = []
    seen: set[tuple[int, int, str]] = set()
    for stamp, line_no, user, movie, tag, label in sorted(candidates):
        if (user, movie, label) in seen:  # sorted by time, so the earliest application is the one kept
            dropped["duplicate_label"] += 1
            continue
        seen.add((user, movie, label))
        description, origin = descriptions[movie]
        rows.append(
            RawItem(
                user_id=str(user),
                item_id=f"ml10m-{line_no:06d}",
                input=description,
                output=label,
                timestamp=datetime.fromtimestamp(stamp, tz=UTC),
                fields={
                    "movie_id": str(movie),
                    "title": titles.get(movie, ""),
                    "tag": tag,
                    "description_source": origin,
                },
            )
        )
    return rows, read, dropped


# LaMP-2M from MovieLens-10M: per user, tag a movie description with one of LaMP's 15 tags.
build_movielens_tags = LampBuilder(LAMP_2M, "MovieLens-10M tags + IMDb plots / TMDB overviews", read_tag_rows)
