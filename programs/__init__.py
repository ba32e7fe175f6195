"""DSPy modules: the PersonaAgent, its tools, the profile builder and the baselines."""

from persona_agent.programs.baselines import ICL, METHODS, PAG, RAG, MemBank, NonPersonalized, make_method
from persona_agent.programs.persona import Persona, init_persona, render_persona
from persona_agent.programs.persona_agent import PersonaAgent
from persona_agent.programs.profile import ProfileBuilder
from persona_agent.programs.saved import ProgramSpec
from persona_agent.programs.tools import ALL_TOOLS, KNOWLEDGE_TOOLS, MEMORY_TOOLS, ToolContext, make_tools

__all__ = [
    "ALL_TOOLS",
    "ICL",
    "KNOWLEDGE_TOOLS",
    "MEMORY_TOOLS",
    "METHODS",
    "PAG",
    "RAG",
    "MemBank",
    "NonPersonalized",
    "Persona",
    "PersonaAgent",
    "ProfileBuilder",
    "ProgramSpec",
    "ToolContext",
    "init_persona",
    "make_method",
    "make_tools",
    "render_persona",
]
