"""Task and alignment signatures: typed label sets exactly as LaMP spells them, task instructions as docstrings."""

from __future__ import annotations

from typing import get_args

import dspy
import pytest
from dspy.utils.exceptions import AdapterParseError

from persona_agent.signatures import (
    LAMP_2M_TAGS,
    LAMP_2N_CATEGORIES,
    CategorizeArticle,
    ChooseCitation,
    GenerateHeadline,
    PersonaGradient,
    PersonalizedRequest,
    PersonaUpdate,
    RateReview,
    SummarizeProfile,
    TagMovie,
    TextualLoss,
    labels_of,
)
from persona_agent.testing import ScriptedLM


def test_label_sets_are_lamps():
    assert len(LAMP_2N_CATEGORIES) == len(set(LAMP_2N_CATEGORIES)) == 15
    assert len(LAMP_2M_TAGS) == len(set(LAMP_2M_TAGS)) == 15
    assert {"science & technology", "food & drink", "healthy living"} <= set(LAMP_2N_CATEGORIES)
    assert {"based on a book", "twist ending", "true story"} <= set(LAMP_2M_TAGS)
    assert labels_of(CategorizeArticle) == LAMP_2N_CATEGORIES
    assert labels_of(TagMovie) == LAMP_2M_TAGS
    assert labels_of(RateReview) == ("1", "2", "3", "4", "5")
    assert labels_of(ChooseCitation) == ("[1]", "[2]")
    assert labels_of(GenerateHeadline) is None and labels_of(PersonalizedRequest) is None


@pytest.mark.parametrize(
    "signature",
    [
        PersonalizedRequest,
        CategorizeArticle,
        TagMovie,
        RateReview,
        ChooseCitation,
        GenerateHeadline,
        SummarizeProfile,
        TextualLoss,
        PersonaGradient,
        PersonaUpdate,
    ],
)
def test_every_signature_has_instructions(signature):
    assert len(signature.instructions.split()) >= 8


def test_off_list_label_does_not_parse():
    scripted = ScriptedLM({CategorizeArticle: {"category": "weather"}})
    with dspy.context(lm=scripted), pytest.raises(AdapterParseError):
        dspy.Predict(CategorizeArticle)(article="Storm warning")
    assert "weather" not in get_args(CategorizeArticle.output_fields["category"].annotation)
