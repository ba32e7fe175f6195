"""Stores: DuckDB memory (the source of truth), per-user FAISS partitions, the embedder."""

from persona_agent.stores.embeddings import Embedder, SentenceTransformerEmbedder
from persona_agent.stores.memory import MemoryStore
from persona_agent.stores.records import ForgetReport, IngestReport, Interaction, NewInteraction, Profile, SearchHit

__all__ = [
    "Embedder",
    "ForgetReport",
    "IngestReport",
    "Interaction",
    "MemoryStore",
    "NewInteraction",
    "Profile",
    "SearchHit",
    "SentenceTransformerEmbedder",
]
