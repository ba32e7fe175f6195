"""LaMP's label sets (Salemi et al., 2023), in one place and importable without DSPy: the task
signatures type their outputs with them and the evaluation scores against them."""

from __future__ import annotations

LAMP_2N_CATEGORIES: tuple[str, ...] = (
    "women",
    "religion",
    "politics",
    "style & beauty",
    "entertainment",
    "culture & arts",
    "sports",
    "science & technology",
    "travel",
    "business",
    "crime",
    "education",
    "healthy living",
    "parents",
    "food & drink",
)
LAMP_2M_TAGS: tuple[str, ...] = (
    "sci-fi",
    "based on a book",
    "comedy",
    "action",
    "twist ending",
    "dystopia",
    "dark comedy",
    "classic",
    "psychology",
    "fantasy",
    "romance",
    "thought-provoking",
    "social commentary",
    "violence",
    "true story",
)
LAMP_3_RATINGS: tuple[str, ...] = ("1", "2", "3", "4", "5")
LAMP_1_CHOICES: tuple[str, ...] = ("[1]", "[2]")
