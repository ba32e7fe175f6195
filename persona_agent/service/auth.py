"""Who is calling: the admin API key (every route) or a per-user token (only that user's routes).

A user token is `pat.<payload>.<signature>`: the payload is base64url JSON `{"sub": user_id, "iat", "exp"}`
and the signature an HMAC-SHA256 of `pat.<payload>` under the token secret (the `token_secret` setting, or one
derived from the API key), so the service checks tokens without storing them, and a token names exactly one
user. Tokens are presented like the API key: `Authorization: Bearer <token>` (what OpenAI clients send) or
`X-API-Key: <token>`. Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from persona_agent.config import Settings
from persona_agent.errors import ConfigError, PersonaAgentError
from persona_agent.stores.validation import validate_user_id

PREFIX = "pat"


class AuthError(PersonaAgentError):
    """A credential is missing, malformed, forged or expired (HTTP 401)."""


class ForbiddenError(PersonaAgentError):
    """A valid credential that may not reach this resource (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """The caller: the admin, or one user."""

    admin: bool
    user_id: str | None = None

    def require_user(self, user_id: str) -> None:
        """Raise `ForbiddenError` unless this caller may act for `user_id`."""
        if not self.admin and self.user_id != user_id:
            raise ForbiddenError(f"this token is for another user, not {user_id!r}")

    def require_admin(self) -> None:
        if not self.admin:
            raise ForbiddenError("this route needs the admin API key")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_secret(settings: Settings) -> bytes:
    """The HMAC key of user tokens: the `token_secret` setting, else derived from the API key."""
    if settings.token_secret is not None:
        return settings.token_secret.get_secret_value().encode()
    if settings.api_key is None:
        raise ConfigError("set PERSONA_AGENT_API_KEY (or PERSONA_AGENT_TOKEN_SECRET) to mint or check user tokens")
    return hmac.new(settings.api_key.get_secret_value().encode(), b"persona-agent user tokens v1", "sha256").digest()


def mint_token(user_id: str, secret: bytes, *, ttl_seconds: int | None = None, now: float | None = None) -> str:
    """A token for `user_id`, valid for `ttl_seconds` (None: until the secret changes)."""
    user_id = validate_user_id(user_id)
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "iat": issued, "exp": None if ttl_seconds is None else issued + int(ttl_seconds)}
    payload = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    body = f"{PREFIX}.{payload}"
    return f"{body}.{_b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


def verify_token(token: str, secret: bytes, *, now: float | None = None) -> str:
    """The user id a token carries; raises `AuthError` if it is malformed, forged or expired."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise AuthError("not a valid credential")
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    try:
        given = _unb64(parts[2])
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise AuthError("not a valid credential") from None
    if not hmac.compare_digest(expected, given):
        raise AuthError("not a valid credential")
    expires = claims.get("exp")
    if expires is not None and (time.time() if now is None else now) >= expires:
        raise AuthError("the token has expired")
    return validate_user_id(claims.get("sub"))


class Authenticator:
    """Turns a presented credential into a `Principal`."""

    def __init__(self, settings: Settings) -> None:
        if settings.api_key is None:
            raise ConfigError("the service needs an admin API key: set PERSONA_AGENT_API_KEY")
        self._admin = settings.api_key.get_secret_value().encode()
        self._secret = token_secret(settings)

    def principal(self, credential: str | None) -> Principal:
        if not credential:
            raise AuthError("missing credentials: send 'Authorization: Bearer <API key or user token>'")
        if hmac.compare_digest(credential.encode(), self._admin):
            return Principal(admin=True)
        return Principal(admin=False, user_id=verify_token(credential, self._secret))

    def mint(self, user_id: str, ttl_seconds: int | None = None) -> str:
        return mint_token(user_id, self._secret, ttl_seconds=ttl_seconds)
