"""JSON request bodies go through the validation chokepoint before FastAPI reads them.

`stores.validation.parse_json` parses each JSON body once, refusing what the rest of the service could not carry
(lone surrogates or NUL in any string, NaN / Infinity / overflowing numbers, nesting deeper than
`MAX_JSON_DEPTH` or than Python's parser can go) with an `InvalidInputError` naming the place, which the app
answers with 422. FastAPI then uses the parsed body as is: the body is parsed once.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from persona_agent.stores.validation import parse_json


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "application/json").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


class CheckedBodyRoute(APIRoute):
    """A route whose JSON body is checked by `parse_json` before FastAPI parses and validates it."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            body = await request.body()
            if body and _is_json(request.headers.get("content-type")):
                try:
                    # Starlette's `Request.json()` returns `_json` when set: FastAPI reuses this parse.
                    request._json = parse_json(body, "body")
                except json.JSONDecodeError:
                    pass  # not JSON at all: FastAPI answers its own 422 (json_invalid)
            return await handler(request)

        return checked
