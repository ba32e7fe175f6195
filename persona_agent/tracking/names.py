"""What a user's things are called in MLflow's registry, where registered models and prompts share one namespace.

A user's registered model is `persona-<user id>` and their prompt `persona.<user id>`: MLflow refuses a prompt
and a model of the same name, and no model name begins with `persona.`, so neither can take the other's name.
"""

from __future__ import annotations

import hashlib
import re

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,100}$")


def _user_part(user_id: str) -> str:
    """The user id when MLflow can spell it, else a slug plus a hash (distinct ids stay distinct)."""
    if _SAFE_NAME.match(user_id):
        return user_id
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", user_id).strip("-.")[:40] or "user"
    return f"{slug}-{hashlib.sha256(user_id.encode()).hexdigest()[:10]}"


def model_name(user_id: str) -> str:
    """The registered model of a user: `persona-<user id>`, or a slug plus a hash for ids MLflow cannot name."""
    return f"persona-{_user_part(user_id)}"


def prompt_name(user_id: str) -> str:
    """The prompt of a user in MLflow's prompt registry: `persona.<user id>` (same spelling rules)."""
    return f"persona.{_user_part(user_id)}"
