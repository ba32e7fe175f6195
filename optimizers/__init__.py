"""Optimizers: the persona-alignment teleprompter, its peers GEPA and COPRO, the guard they share, the budget,
and the compile strategies by name."""

from persona_agent.optimizers.budget import Budget, BudgetExhaustedError
from persona_agent.optimizers.factory import STRATEGIES, make_optimizer, optimizer_for
from persona_agent.optimizers.guard import PersonaGuard
from persona_agent.optimizers.metrics import exact_match
from persona_agent.optimizers.persona_aligner import CompileEstimate, PersonaAligner
from persona_agent.optimizers.trace import AlignmentTrace
from persona_agent.optimizers.trainset import example_from_interaction, trainset_from_store

__all__ = [
    "STRATEGIES",
    "AlignmentTrace",
    "Budget",
    "BudgetExhaustedError",
    "CompileEstimate",
    "PersonaAligner",
    "PersonaGuard",
    "exact_match",
    "example_from_interaction",
    "make_optimizer",
    "optimizer_for",
    "trainset_from_store",
]
