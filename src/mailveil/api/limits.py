"""A pure-ASGI body size limit, checked on Content-Length and again on the bytes that arrive.

Streamed (chunked) bodies are counted as they come, so a client cannot slip past the limit
by leaving Content-Length out. Bulk media types get the larger limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailveil.api.problems import PROBLEM_MEDIA_TYPE, problem_bytes

# Raw messages (abuse reports) are e-mails, larger than any JSON body.
BULK_MEDIA_TYPES = ("application/x-ndjson", "application/ndjson", "text/csv", "message/rfc822")


class BodyTooLarge(Exception):
    """Raised into the app when the body passes its limit; answered as 413."""


class BodySizeLimit:
    def __init__(self, app: ASGIApp, json_limit: int, bulk_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.bulk_limit = bulk_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        limit = self.bulk_limit if ctype in BULK_MEDIA_TYPES else self.json_limit
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                too_big = False
            if too_big:
                await self._reject(scope, send, limit)
                return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Whatever the app answers to a body it could not finish reading (frameworks turn
            # the read error into a 400 or 500), the client gets the 413 that explains it.
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(scope, send, limit)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, send, limit)

    @staticmethod
    async def _reject(scope: Scope, send: Send, limit: int) -> None:
        body = problem_bytes(
            413,
            "payload-too-large",
            "Request body too large",
            f"the body exceeds the {limit}-byte limit for its media type",
            scope.get("path", ""),
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
