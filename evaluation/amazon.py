"""Amazon Musical Instruments 5-core reviews (McAuley) as LaMP-3 (rating a review 1..5).

Source: `amazon-musical-instruments/Musical_instruments_reviews.csv` under `data_dir` (the Kaggle CSV
export of `reviews_Musical_Instruments_5.json`; see SOURCES.md). LaMP-3 itself was built from Amazon
reviews, so the mapping is direct: user = `reviewerID` (kept as is), input = `reviewText`, output =
`overall` as "1".."5", time = `unixReviewTime` (day resolution, so same-day reviews are simultaneous).
Reviews with empty text are dropped; the summary line is kept as a field, not shown, since it often
states the rating outright ("Five stars").
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from persona_agent.core.errors import DatasetFormatError
from persona_agent.core.tasks import LAMP_3
from persona_agent.evaluation.builders import LampBuilder, RawItem, csv_rows

REVIEWS_FILE = "amazon-musical-instruments/Musical_instruments_reviews.csv"
_COLUMNS = ("reviewerID", "asin", "reviewText", "overall", "unixReviewTime")


def rating_label(raw: str) -> str | None:
    """ "5.0" / "5" -> "5"; None for anything that is not a whole number from 1 to 5."""
    try:
        value = float(raw)
    except ValueError:
        return None
    if value != int(value) or not 1 <= value <= 5:
        return None
    return str(int(value))


def read_reviews(root: Path) -> tuple[list[RawItem], int, Counter[str]]:
    """Every review with text as a row (user = reviewerID, input = text, output = rating), reviews read, drops."""
    path = root / REVIEWS_FILE
    dropped: Counter[str] = Counter()
    rows: list[RawItem] = []
    read = 0
    for row_no, row in csv_rows(path, _COLUMNS):
        read += 1
        user = (row["reviewerID"] or "").strip()
        if not user:
            raise DatasetFormatError(path, f"row {row_no}", "reviewerID", row["reviewerID"], "empty")
        label = rating_label((row["overall"] or "").strip())
        if label is None:
            raise DatasetFormatError(path, f"row {row_no}", "overall", row["overall"], "not a rating 1..5")
        try:
            stamp = int((row["unixReviewTime"] or "").strip())
        except ValueError as exc:
            raise DatasetFormatError(
                path, f"row {row_no}", "unixReviewTime", row["unixReviewTime"], "not an integer"
            ) from exc
        text = " ".join((row["reviewText"] or "").split())
        if not text:
            dropped["empty_text"] += 1
            continue
        rows.append(
            RawItem(
                user_id=user,
                item_id=f"amazon-mi-{row_no:05d}",
                input=text,
                output=label,
                timestamp=datetime.fromtimestamp(stamp, tz=UTC),
                fields={
                    "asin": row["asin"] or "",
                    "summary": row.get("summary") or "",
                    "reviewTime": row.get("reviewTime") or "",
                },
            )
        )
    return rows, read, dropped


# LaMP-3 from Amazon Musical Instruments: per reviewer, predict the star rating of a review text.
build_amazon_ratings = LampBuilder(LAMP_3, "Amazon Musical Instruments 5-core reviews", read_reviews)
