"""Task signatures: what the agent is asked to do. Their docstrings are the task instructions; a
user's persona is placed on top of them per user (see `persona_agent.programs.persona`).

Label sets are LaMP's (Salemi et al., 2023), so outputs are typed and off-list answers fail parsing
instead of being scored as if they were labels.
"""

from __future__ import annotations

from typing import Literal, get_args

import dspy

from persona_agent.core.labels import LAMP_1_CHOICES, LAMP_2M_TAGS, LAMP_2N_CATEGORIES, LAMP_3_RATINGS

NewsCategory = Literal[LAMP_2N_CATEGORIES]  # type: ignore[valid-type]
MovieTag = Literal[LAMP_2M_TAGS]  # type: ignore[valid-type]
Rating = Literal[LAMP_3_RATINGS]  # type: ignore[valid-type]
CitationChoice = Literal[LAMP_1_CHOICES]  # type: ignore[valid-type]


class PersonalizedRequest(dspy.Signature):
    """Respond to this user's request the way this user wants it answered."""

    request: str = dspy.InputField(desc="what the user asks")
    response: str = dspy.OutputField(desc="the response this user would want")


class CategorizeArticle(dspy.Signature):
    """Choose the category this user would give to the news article they wrote. Answer with exactly one
    category from the allowed list."""

    article: str = dspy.InputField(desc="the article's headline and short description")
    category: NewsCategory = dspy.OutputField()


class TagMovie(dspy.Signature):
    """Choose the tag this user would give to the movie described. Answer with exactly one tag from the
    allowed list."""

    description: str = dspy.InputField(desc="the movie's plot description")
    tag: MovieTag = dspy.OutputField()


class RateReview(dspy.Signature):
    """Predict the rating from 1 to 5 stars that this user gave with the product review they wrote."""

    review: str = dspy.InputField(desc="the user's review text")
    rating: Rating = dspy.OutputField(desc="1, 2, 3, 4 or 5")


class ChooseCitation(dspy.Signature):
    """The user wrote a paper with the given title. Which of the two references is the user more likely
    to cite? Answer [1] or [2]."""

    request: str = dspy.InputField(desc="the paper title and the two candidate references")
    choice: CitationChoice = dspy.OutputField(desc="[1] or [2]")


class GenerateHeadline(dspy.Signature):
    """Write the headline this user would write for the news article described, in their style."""

    article: str = dspy.InputField(desc="the article's short description")
    headline: str = dspy.OutputField(desc="one headline, no quotes")


def labels_of(signature: type[dspy.Signature]) -> tuple[str, ...] | None:
    """The allowed labels of a signature's (single) output field, or None if it is free text."""
    fields = list(signature.output_fields.values())
    if not fields:
        return None
    args = get_args(fields[0].annotation)
    return tuple(args) if args and all(isinstance(a, str) for a in args) else None
