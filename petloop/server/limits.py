"""A request body size limit, enforced while the body streams in (ASGI middleware).

Requests to ``large_paths`` may carry up to ``max_bytes`` (uploads); every other request up to
``small_bytes``. A declared Content-Length over the limit is refused before anything is read; a
body that grows past it (chunked uploads) is cut off with the same 413 answer.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException


class BodyTooLarge(HTTPException):
    """Raised while reading the body; FastAPI answers it as a 413."""

    def __init__(self, limit: int):
        super().__init__(413, _message(limit))


class BodyLimit:
    def __init__(self, app, max_bytes: int, small_bytes: int, large_paths: tuple[str, ...] = ()):
        self.app = app
        self.max_bytes = max_bytes
        self.small_bytes = small_bytes
        self.large_paths = large_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes if scope["path"] in self.large_paths else self.small_bytes
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, limit)


async def _too_large(send, limit: int) -> None:
    body = json.dumps({"detail": _message(limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _message(limit: int) -> str:
    return f"request body larger than the limit of {limit / 2**20:.3g} MiB"
