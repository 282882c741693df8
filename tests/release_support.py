"""Helpers for the release-flow tests: a tiny CPU release suite and a local HTTP server that
records the notifications it receives."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TINY_SUITE = """
specs:
  - name: release-tiny-decode
    kernel: batch_decode
    backends: [fa2, torch-sdpa]
    params: {batch_size: [16], kv_len: [8192]}
    cpu_params: {batch_size: [1, 2], kv_len: [64], num_qo_heads: [4], num_kv_heads: [2],
                 head_dim: [64]}
    timing: {warmup: 1, iterations: 30}
"""


def write_tiny_suite(tmp_path: Path) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(TINY_SUITE)
    return p


@contextmanager
def notification_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(url, received): every JSON body POSTed to the url is appended to ``received``."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
