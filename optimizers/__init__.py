"""Optimizers: the persona-alignment teleprompter, its budget, and the comparison strategies."""

from persona_agent.optimizers.budget import Budget, BudgetExhaustedError
from persona_agent.optimizers.metrics import exact_match
from persona_agent.optimizers.persona_aligner import CompileEstimate, PersonaAligner
from persona_agent.optimizers.trainset import example_from_interaction, trainset_from_store

__all__ = [
    "Budget",
    "BudgetExhaustedError",
    "CompileEstimate",
    "PersonaAligner",
    "exact_match",
    "example_from_interaction",
    "trainset_from_store",
]
