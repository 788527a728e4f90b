"""Request limits: a body size cap (413) enforced before the body reaches a route, and
JSON bodies whose text the server can store and send back (422)."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import Request

from relaygraph.serve._errors import BadRequest

Scope = dict[str, Any]


class BodyLimitMiddleware:
    """Answer 413 to bodies over ``max_bytes``, by ``Content-Length`` or while streaming.

    A chunked body is counted as it arrives; the route never sees more than the limit.
    """

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _reply(send, 400, "Content-Length is not a number")
                    return
                if declared > self.max_bytes:
                    await _reply(send, 413, self._too_large(declared))
                    return
        seen = 0
        started = False
        refused = False

        async def limited_receive() -> Any:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    refused = True
                    raise _TooLarge()
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if refused:
                # the app caught the overflow as a body error (FastAPI answers 400):
                # answer 413 instead, and drop the app's own response
                if not started:
                    started = True
                    await _reply(send, 413, self._too_large(seen))
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reply(send, 413, self._too_large(seen))
        except Exception:
            if refused and not started:
                await _reply(send, 413, self._too_large(seen))
                return
            raise

    def _too_large(self, size: int) -> str:
        return (f"request body too large: {size} bytes, the limit is {self.max_bytes} "
                f"(server setting max_body_bytes)")


class _TooLarge(Exception):
    pass


async def _reply(send: Any, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# JSON can spell a lone surrogate as an escape (\ud800); Python decodes it into a str that
# no database, serializer or response can encode. Only bodies with such an escape (valid
# pairs included) are parsed a second time to look.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate(value: Any) -> str | None:
    """Where JSON data holds a lone surrogate (``"metadata.note"``), or None."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return where or "the body"
        elif isinstance(item, dict):
            for key, val in item.items():
                name = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
                path = f"{where}.{name}" if where else name
                stack.append((path + " (the key)", key))
                stack.append((path, val))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(item))
    return None


async def valid_json_text(request: Request) -> None:
    """FastAPI dependency: a JSON body with a lone surrogate is 422, before it is stored."""
    if "json" not in request.headers.get("content-type", ""):
        return
    body = await request.body()
    if not _SURROGATE_ESCAPE.search(body):
        return
    try:
        data = json.loads(body)
    except ValueError:
        return  # the route reports the malformed body
    where = lone_surrogate(data)
    if where is not None:
        raise BadRequest(f"the body holds a lone surrogate (a \\ud800-\\udfff escape without "
                         f"its pair) at {where}: text must be valid Unicode")
