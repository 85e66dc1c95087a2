"""A local veto-hook receiver on loopback: answers as told (allow, hold, refuse, slow, garbage,
redirect, error, too long) and records what it was sent, checking each signature."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mailveil.relay.veto import SIGNATURE_HEADER, verify

SECRET = "veto-test-secret"


@dataclass
class Receiver:
    """``mode``: allow | hold | refuse | slow | garbage | redirect | error | huge | reset."""

    mode: str = "allow"
    delay: float = 0.0  # seconds before every answer
    slow_seconds: float = 2.0
    seen: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/veto"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real hook would
            # Headers and body go out as two writes: without this, Nagle holds the body
            # until the client's delayed ACK (40 ms).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if not verify(SECRET, body, self.headers.get(SIGNATURE_HEADER) or ""):
                    receiver.bad_signatures += 1
                receiver.seen.append(json.loads(body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                mode = receiver.mode
                if mode == "slow":
                    time.sleep(receiver.slow_seconds)
                    mode = "allow"
                if mode == "reset":
                    self.close_connection = True
                    self.connection.close()
                    return
                if mode == "redirect":
                    self._answer(302, b"", {"Location": "http://127.0.0.1:9/elsewhere"})
                    return
                if mode == "error":
                    self._answer(500, b'{"decision": "allow"}')
                    return
                answer = {
                    "garbage": b"<html>allow</html>",
                    "huge": b'{"decision": "allow", "reason": "' + b"x" * 10_000 + b'"}',
                }.get(mode)
                if answer is None:
                    answer = json.dumps({"decision": mode, "reason": f"test {mode}"}).encode()
                self._answer(200, answer)

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


__all__ = ["SECRET", "Receiver"]
