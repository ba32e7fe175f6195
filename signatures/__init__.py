"""What the LM is asked: task signatures, profile summarisation and persona alignment."""

from persona_agent.signatures.alignment import PersonaEdit, PersonaGradient, PersonaUpdate, TextualLoss
from persona_agent.signatures.profile import SummarizeProfile
from persona_agent.signatures.tasks import (
    LAMP_1_CHOICES,
    LAMP_2M_TAGS,
    LAMP_2N_CATEGORIES,
    LAMP_3_RATINGS,
    CategorizeArticle,
    ChooseCitation,
    GenerateHeadline,
    PersonalizedRequest,
    RateReview,
    TagMovie,
    labels_of,
)

__all__ = [
    "LAMP_1_CHOICES",
    "LAMP_2M_TAGS",
    "LAMP_2N_CATEGORIES",
    "LAMP_3_RATINGS",
    "CategorizeArticle",
    "ChooseCitation",
    "GenerateHeadline",
    "PersonaEdit",
    "PersonaGradient",
    "PersonaUpdate",
    "PersonalizedRequest",
    "RateReview",
    "SummarizeProfile",
    "TagMovie",
    "TextualLoss",
    "labels_of",
]
