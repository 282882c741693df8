"""A package index on 127.0.0.1 serving the recorded PEP 691 listing of flashinfer-python
(tests/fixtures/index/), so that choosing a release's baseline never leaves the machine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LISTING = Path(__file__).parent / "fixtures" / "index" / "flashinfer-python.json"


class _Index(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path != "/simple/flashinfer-python/":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def serve_index(body: bytes | None = None) -> Iterator[str]:
    """Serve the listing (or ``body``); yields the index URL (``.../simple``)."""
    _Index.body = LISTING.read_bytes() if body is None else body
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
