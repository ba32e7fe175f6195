"""HuffPost News Category (Misra 2022) as LaMP-2N (categorization) and LaMP-4 (headline generation).

Source files (JSON lines with link, headline, category, short_description, authors, date), under
`data_dir`: `huffpost-news/News_Category_Dataset_v3.json` then `..._v2.json` (see SOURCES.md).

Decisions, each for a reason:
- Merge v3 and v2 and keep the first article seen per headline (v3 first: its labels are the newer ones).
  Headlines are compared after stripping; repeats inside one file (weekly columns) go too.
- The user is the byline's single author. "Name, AP" / "Name, Reuters" drop the affiliation, so the same
  person merges across outlets. Bylines naming several people ("A and B", "A, B, and C, AP") are dropped:
  a co-written article is not one person's choice, and copying it into each co-author's history would
  let the same article be a query for one user and a profile item for another. Empty bylines are dropped.
- User ids are slugs (`slugify_user_id`): "Dánica Coto, AP" and "DÁNICA COTO, AP" are one user.
- LaMP-2N input is "headline. short description" and the output is one of LaMP's 15 categories via
  `CATEGORY_MAP`; HuffPost categories with no LaMP counterpart (U.S. NEWS, WORLD NEWS, COMEDY, ...) are
  dropped. LaMP-4 input is the short description, output the headline; it keeps every category.
- Time is the article date (day resolution): same-day articles are simultaneous (never in each other's profile).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

from persona_agent.core.errors import DatasetFormatError
from persona_agent.core.lamp import require_file
from persona_agent.core.tasks import LAMP_2N, LAMP_4
from persona_agent.evaluation.builders import LampBuilder, RawItem, data_path, slugify_user_id

HUFFPOST_FILES: tuple[str, ...] = (
    "huffpost-news/News_Category_Dataset_v3.json",
    "huffpost-news/News_Category_Dataset_v2.json",
)

# HuffPost category (upper case) -> LaMP-2N category. HuffPost renamed several categories over the years
# (ARTS & CULTURE / CULTURE & ARTS, PARENTING / PARENTS, ...): every name of one desk maps to one label.
CATEGORY_MAP: dict[str, str] = {
    "WOMEN": "women",
    "RELIGION": "religion",
    "POLITICS": "politics",
    "STYLE": "style & beauty",
    "STYLE & BEAUTY": "style & beauty",
    "ENTERTAINMENT": "entertainment",
    "ARTS": "culture & arts",
    "ARTS & CULTURE": "culture & arts",
    "CULTURE & ARTS": "culture & arts",
    "SPORTS": "sports",
    "TECH": "science & technology",
    "SCIENCE": "science & technology",
    "TRAVEL": "travel",
    "BUSINESS": "business",
    "MONEY": "business",
    "CRIME": "crime",
    "EDUCATION": "education",
    "COLLEGE": "education",
    "WELLNESS": "healthy living",
    "HEALTHY LIVING": "healthy living",
    "PARENTING": "parents",
    "PARENTS": "parents",
    "FOOD & DRINK": "food & drink",
    "TASTE": "food & drink",
}
# Dropped (no LaMP-2N counterpart): U.S. NEWS, WORLD NEWS, WORLDPOST, THE WORLDPOST, COMEDY, BLACK VOICES,
# QUEER VOICES, LATINO VOICES, MEDIA, WEIRD NEWS, HOME & LIVING, ENVIRONMENT, GREEN, IMPACT, WEDDINGS,
# DIVORCE, GOOD NEWS, FIFTY.

_REQUIRED = ("headline", "category", "short_description", "authors", "date")
_SEVERAL = re.compile(r"\s(?:and|&)\s", re.IGNORECASE)


def byline_author(authors: str) -> tuple[str | None, str]:
    """The single author named by a byline, or (None, reason) when it names nobody or several people."""
    byline = " ".join(authors.split())
    if not byline:
        return None, "no_author"
    parts = [p.strip() for p in byline.split(",")]
    if len(parts) > 2 or _SEVERAL.search(parts[0]):
        return None, "multi_author_byline"
    # "Name, Affiliation" (AP, Reuters, Yahoo Entertainment, Editorial Partner, ...): the person is the name.
    return parts[0], ""


def join_headline(headline: str, description: str) -> str:
    """Headline and short description as one text, with a full stop between them unless one is there."""
    if not description:
        return headline
    if headline[-1:] in ".!?:;\"'”’…":
        return f"{headline} {description}"
    return f"{headline}. {description}"


@dataclass(frozen=True, slots=True)
class Article:
    """One de-duplicated article with a single author."""

    item_id: str
    author: str
    headline: str
    description: str
    category: str
    day: date
    link: str


def read_articles(data_dir: Path | str | None = None) -> tuple[list[Article], int, Counter[str]]:
    """All single-author, de-duplicated articles, the number of lines read, and drop counts by reason."""
    root = data_path(data_dir)
    articles: list[Article] = []
    dropped: Counter[str] = Counter()
    seen_headlines: set[str] = set()
    read = 0
    for relative in HUFFPOST_FILES:
        path = require_file(root / relative)
        tag = "v3" if "v3" in relative else "v2"
        with path.open(encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                read += 1
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetFormatError(path, f"line {line_no}", "(json)", line[:60], str(exc)) from exc
                if not isinstance(row, dict):
                    raise DatasetFormatError(path, f"line {line_no}", "(json)", row, "expected a JSON object")
                for key in _REQUIRED:
                    if not isinstance(row.get(key), str):
                        raise DatasetFormatError(path, f"line {line_no}", key, row.get(key), "missing or not a string")
                try:
                    day = date.fromisoformat(row["date"][:10])
                except ValueError as exc:
                    raise DatasetFormatError(path, f"line {line_no}", "date", row["date"], "not YYYY-MM-DD") from exc
                headline = " ".join(row["headline"].split())
                if not headline:
                    dropped["empty_headline"] += 1
                    continue
                if headline in seen_headlines:
                    dropped["duplicate_headline"] += 1
                    continue
                seen_headlines.add(headline)
                author, reason = byline_author(row["authors"])
                if author is None or not slugify_user_id(author):
                    dropped[reason or "no_author"] += 1
                    continue
                articles.append(
                    Article(
                        item_id=f"huffpost-{tag}-{line_no:05d}",
                        author=author,
                        headline=headline,
                        description=" ".join(row["short_description"].split()),
                        category=row["category"].strip().upper(),
                        day=day,
                        link=str(row.get("link", "")),
                    )
                )
    return articles, read, dropped


def _when(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _fields(article: Article) -> dict[str, str]:
    return {
        "headline": article.headline,
        "short_description": article.description,
        "huffpost_category": article.category,
        "author": article.author,
        "date": article.day.isoformat(),
        "link": article.link,
    }


def _category_pair(article: Article) -> tuple[str, str] | None:
    """LaMP-2N: "headline. short description" -> its LaMP category; None for a category LaMP lacks."""
    label = CATEGORY_MAP.get(article.category)
    return None if label is None else (join_headline(article.headline, article.description), label)


def _headline_pair(article: Article) -> tuple[str, str] | None:
    """LaMP-4: short description -> headline; None without a description."""
    return (article.description, article.headline) if article.description else None


def _article_rows(
    root: Path, pair: Callable[[Article], tuple[str, str] | None], unusable: str
) -> tuple[list[RawItem], int, Counter[str]]:
    """The articles as rows of one task: `pair` gives (input, output), or None to drop one as `unusable`."""
    articles, read, dropped = read_articles(root)
    rows: list[RawItem] = []
    for article in articles:
        in_out = pair(article)
        if in_out is None:
            dropped[unusable] += 1
            continue
        rows.append(
            RawItem(
                user_id=slugify_user_id(article.author),
                item_id=article.item_id,
                input=in_out[0],
                output=in_out[1],
                timestamp=_when(article.day),
                fields=_fields(article),
            )
        )
    return rows, read, dropped


_SOURCE = "HuffPost News Category v3+v2 (authors as users)"

# LaMP-2N from HuffPost: per author, categorize "headline. short description" into LaMP's 15 categories.
build_huffpost_categories = LampBuilder(
    LAMP_2N, _SOURCE, partial(_article_rows, pair=_category_pair, unusable="unmapped_category")
)
# LaMP-4 from HuffPost: per author, write the headline of an article from its short description.
build_huffpost_headlines = LampBuilder(
    LAMP_4, _SOURCE, partial(_article_rows, pair=_headline_pair, unusable="empty_short_description")
)
