"""Who is calling: the admin API key (every route) or a per-user token (only that user's routes).

A user token is `pat.<payload>.<signature>`: the payload is base64url JSON `{"sub": user_id, "iat", "exp"}`
(`iat` to the microsecond) and the signature an HMAC-SHA256 of `pat.<payload>` under the token secret (the
`token_secret` setting, or one derived from the API key), so the service checks tokens without storing them,
and a token names exactly one user. Both parts must be canonical unpadded base64url (re-encoding gives the same
text), so a token has exactly one spelling. Every token expires (`token_ttl_seconds` unless minted otherwise),
and one issued at or before its user's revocation time (`persona_agent.stores.tokens`: moved by forget and by
the admin) is dead. Tokens are presented like the API key: `Authorization: Bearer <token>` (what OpenAI clients
send) or `X-API-Key: <token>`. Comparisons are constant-time.

The API key and an explicit token secret must be strong: see `require_strong`. `RequireCredential`
authenticates every request before its body is read (so an unauthenticated request is a 401 whatever it sends).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from persona_agent.core.config import Settings
from persona_agent.core.errors import ConfigError, InvalidInputError, PersonaAgentError
from persona_agent.service.limits import json_reply
from persona_agent.stores.tokens import TokenRevocations
from persona_agent.stores.validation import validate_user_id

PREFIX = "pat"
MIN_SECRET_CHARS = 24
MIN_SECRET_BITS = 96
MAX_CREDENTIAL_CHARS = 1024
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class AuthError(PersonaAgentError):
    """A credential is missing, malformed, forged, expired or revoked (HTTP 401)."""


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


@dataclass(frozen=True)
class Claims:
    """What a valid user token says: whose it is, when it was issued and when it expires (epoch seconds)."""

    user_id: str
    issued_at: float
    expires_at: float


def estimated_bits(secret: str) -> float:
    """A deliberately simple strength estimate: length x log2 of the number of distinct characters, capped by the
    character pool (26 per letter case, 10 digits, 33 for anything else), so repeated characters add little."""
    if not secret:
        return 0.0
    pool = sum(
        size
        for size, present in (
            (26, any("a" <= c <= "z" for c in secret)),
            (26, any("A" <= c <= "Z" for c in secret)),
            (10, any("0" <= c <= "9" for c in secret)),
            (33, any(not c.isascii() or not c.isalnum() for c in secret)),
        )
        if present
    )
    return len(secret) * math.log2(min(pool, len(set(secret))))


def require_strong(name: str, secret: SecretStr) -> str:
    """The secret's value, or `ConfigError` if it is weak: under 24 characters or 96 estimated bits
    (`estimated_bits`), or with surrounding whitespace (a header value is stripped, so it could never match)."""
    value = secret.get_secret_value()
    if value != value.strip():
        raise ConfigError(f"{name} starts or ends with whitespace")
    bits = estimated_bits(value)
    if len(value) < MIN_SECRET_CHARS or bits < MIN_SECRET_BITS:
        raise ConfigError(
            f"{name} is too weak ({len(value)} characters, about {bits:.0f} bits): it needs at least "
            f"{MIN_SECRET_CHARS} characters and {MIN_SECRET_BITS} bits, estimated as length x log2(distinct characters, "
            "at most the character pool). Make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    return value


def token_secret(settings: Settings) -> bytes:
    """The HMAC key of user tokens: the `token_secret` setting, else derived from the API key; both must be strong."""
    if settings.token_secret is not None:
        return require_strong("PERSONA_AGENT_TOKEN_SECRET", settings.token_secret).encode()
    if settings.api_key is None:
        raise ConfigError("set PERSONA_AGENT_API_KEY (or PERSONA_AGENT_TOKEN_SECRET) to mint or check user tokens")
    key = require_strong("PERSONA_AGENT_API_KEY", settings.api_key).encode()
    return hmac.new(key, b"persona-agent user tokens v1", "sha256").digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict base64url: the alphabet only, no padding, and the canonical spelling (unused bits zero)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise AuthError("not a valid credential")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("not a valid credential") from None
    if _b64(data) != text:
        raise AuthError("not a valid credential")
    return data


def mint_token(user_id: str, secret: bytes, *, ttl_seconds: float, now: float | None = None) -> str:
    """A token for `user_id`, valid for `ttl_seconds` from now (issue time rounded down to the microsecond)."""
    user_id = validate_user_id(user_id)
    if not ttl_seconds > 0:
        raise InvalidInputError("ttl_seconds", ttl_seconds, "must be positive")
    issued = math.floor((time.time() if now is None else now) * 1e6) / 1e6
    claims = {"sub": user_id, "iat": issued, "exp": issued + float(ttl_seconds)}
    payload = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
    body = f"{PREFIX}.{payload}"
    return f"{body}.{_b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError("not a valid credential")
    return float(value)


def verify_token(token: str, secret: bytes, *, now: float | None = None) -> Claims:
    """The claims of a valid token; `AuthError` if it is malformed, non-canonical, forged or expired."""
    parts = token.split(".")
    if len(token) > MAX_CREDENTIAL_CHARS or len(parts) != 3 or parts[0] != PREFIX:
        raise AuthError("not a valid credential")
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _unb64(parts[2])):
        raise AuthError("not a valid credential")
    try:
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise AuthError("not a valid credential") from None
    if not isinstance(claims, dict) or set(claims) != {"sub", "iat", "exp"}:
        raise AuthError("not a valid credential")
    issued, expires = _number(claims["iat"]), _number(claims["exp"])
    if (time.time() if now is None else now) >= expires:
        raise AuthError("the token has expired")
    return Claims(user_id=validate_user_id(claims["sub"]), issued_at=issued, expires_at=expires)


class Authenticator:
    """Turns a presented credential into a `Principal`. `revocations` is set once the workspace is open."""

    def __init__(self, settings: Settings) -> None:
        if settings.api_key is None:
            raise ConfigError("the service needs an admin API key: set PERSONA_AGENT_API_KEY")
        self._admin = require_strong("PERSONA_AGENT_API_KEY", settings.api_key).encode()
        self._secret = token_secret(settings)
        self.ttl_seconds = settings.token_ttl_seconds
        self.revocations: TokenRevocations | None = None

    async def principal(self, credential: str | None) -> Principal:
        """The caller; a user token is checked against its user's revocation time (DuckDB only on a cache miss,
        in a worker thread)."""
        if not credential:
            raise AuthError("missing credentials: send 'Authorization: Bearer <API key or user token>'")
        if hmac.compare_digest(credential.encode(), self._admin):
            return Principal(admin=True)
        claims = verify_token(credential, self._secret)
        revocations = self.revocations
        if revocations is None:
            raise AuthError("the service is starting: user tokens are checked once it is ready")
        user = claims.user_id
        revoked = (
            revocations.revoked_at(user)
            if revocations.cached(user)
            else await asyncio.to_thread(revocations.revoked_at, user)
        )
        if revoked is not None and claims.issued_at <= revoked:
            raise AuthError("the token was revoked: ask for a new one")
        return Principal(admin=False, user_id=user)

    def mint(self, user_id: str, ttl_seconds: int | None = None) -> str:
        return mint_token(user_id, self._secret, ttl_seconds=ttl_seconds or self.ttl_seconds)


def _credential(headers: list[tuple[bytes, bytes]]) -> str | None:
    values = {name.lower(): value.decode("latin-1") for name, value in headers}
    header = values.get(b"authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return values.get(b"x-api-key")


class RequireCredential:
    """ASGI middleware: every request but `open_paths` needs a credential, checked before the body is read; the
    `Principal` goes to `scope["state"]["principal"]` (FastAPI's `request.state.principal`). `admin_paths`
    (the API docs) need the admin key."""

    def __init__(self, app: Any, auth: Authenticator, open_paths: Collection[str], admin_paths: Collection[str]):
        self.app = app
        self.auth = auth
        self.open_paths = frozenset(open_paths)
        self.admin_paths = frozenset(admin_paths)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.auth.principal(_credential(scope.get("headers") or []))
            if scope["path"] in self.admin_paths:
                principal.require_admin()
        except AuthError as exc:
            await json_reply(send, 401, str(exc), {"WWW-Authenticate": "Bearer"})
            return
        except ForbiddenError as exc:
            await json_reply(send, 403, str(exc))
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
