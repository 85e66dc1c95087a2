"""The witness's HTTP face (C2SP tlog-witness): one submission and one monitoring route.

- ``POST /add-checkpoint`` (the submission prefix is the server's root);
- ``GET /<hex SHA-256 of origin>/checkpoint``: the latest checkpoint it cosigned for that log,
  with the log's signatures and its own cosignature (the monitoring prefix is the root too);
- ``GET /vkey``: its cosignature/v1 verifier key, as a convenience (pin it out of band);
- ``GET /healthz``.

Answers are plain text, as the protocol has them; a refusal's body says why in one line.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from mailveil import __version__
from mailveil.witness.service import MAX_BODY_BYTES, Witness

_TEXT = "text/plain; charset=utf-8"
_ORIGIN_HASH = re.compile(r"[0-9a-f]{64}")


async def _body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it passes ``limit`` bytes (nothing more is kept)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_witness_app(witness: Witness) -> FastAPI:
    app = FastAPI(
        title="mailveil witness",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.post("/add-checkpoint")
    async def add_checkpoint(request: Request) -> Response:
        body = await _body(request, MAX_BODY_BYTES)
        if body is None:
            return Response(f"the body is larger than {MAX_BODY_BYTES} bytes\n", 413, None, _TEXT)
        # SQLite and Ed25519 work blocks: off the event loop, one thread per request.
        reply = await run_in_threadpool(witness.add_checkpoint, body)
        return Response(reply.body, reply.status, None, reply.content_type)

    @app.get("/{origin_hash}/checkpoint")
    def latest(origin_hash: str) -> Response:
        if not _ORIGIN_HASH.fullmatch(origin_hash):
            return Response(
                "the path is /<lowercase hex SHA-256 of the origin>/checkpoint\n", 404, None, _TEXT
            )
        cosigned = witness.state.latest_by_hash(origin_hash)
        if cosigned is None:
            return Response(
                "this witness has cosigned no checkpoint of that log\n", 404, None, _TEXT
            )
        return Response(cosigned.note, 200, None, _TEXT)

    @app.get("/vkey")
    def vkey() -> Response:
        return Response(witness.identity.vkey.vkey + "\n", 200, None, _TEXT)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", 200, None, _TEXT)

    return app


__all__ = ["create_witness_app"]
