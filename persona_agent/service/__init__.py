"""The HTTP service (the `serve` extra): `create_app()` and its parts (auth, jobs, OpenAI-compatible chat)."""

from persona_agent.service.app import create_app

__all__ = ["create_app"]
