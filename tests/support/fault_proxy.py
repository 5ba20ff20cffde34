"""A fault-injecting reverse proxy on 127.0.0.1 in front of an S3 server (moto), for tests.

Example::

    proxy = FaultProxy(s3_server.endpoint, fail_first=5, fraction=0.2, max_faults=12).start()
    run_sweep(spec, store=url, s3_endpoint=proxy.endpoint)
    proxy.faults          # {"503 SlowDown": 5, "500 InternalError": 4}
    proxy.stop()

Requests whose method and path match ``match`` (default: PUTs of Zarr chunk keys,
``.../c/...``) are answered with an S3 error instead of being forwarded: the first
``fail_first`` of them with ``status``/``code`` (503 SlowDown), then a seeded
``fraction`` of the rest with 500 InternalError, at most ``max_faults`` in all.
``forbid`` (a regex) answers matching PUTs with 403 AccessDenied, always. When the
upstream is unreachable the client connection is closed without an answer, as
when a server goes away mid-request.
"""

from __future__ import annotations

import http.client
import random
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

__all__ = ["FaultProxy"]

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
_ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
              '<RequestId>fault-proxy</RequestId></Error>')


class FaultProxy:
    """Threaded HTTP reverse proxy with bounded, counted fault injection."""

    def __init__(self, upstream: str, *, fail_first: int = 0, fraction: float = 0.0, max_faults: int = 0,
                 status: int = 503, code: str = "SlowDown", match: str = r"^PUT .*/c/",
                 forbid: str | None = None, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.fail_first, self.fraction, self.max_faults = fail_first, fraction, max(max_faults, fail_first)
        self.status, self.code = status, code
        self.match = re.compile(match)
        self.forbid = re.compile(forbid) if forbid else None
        self.rng = random.Random(seed)
        self.faults: Counter = Counter()
        self.requests = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._matched = 0
        self._server: ThreadingHTTPServer | None = None
        self.endpoint = ""

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def _decide(self, method: str, path: str) -> tuple[int, str] | None:
        """An injected (status, code) for this request, or None to forward it."""
        line = f"{method} {path}"
        with self._lock:
            self.requests += 1
            if self.forbid is not None and method == "PUT" and self.forbid.search(path):
                self.faults["403 AccessDenied"] += 1
                return 403, "AccessDenied"
            if not self.match.search(line):
                return None
            self._matched += 1
            injected = sum(v for k, v in self.faults.items() if not k.startswith("403"))
            if injected >= self.max_faults:
                return None
            if self._matched <= self.fail_first:
                self.faults[f"{self.status} {self.code}"] += 1
                return self.status, self.code
            if self.rng.random() < self.fraction:
                self.faults["500 InternalError"] += 1
                return 500, "InternalError"
        return None

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline().strip():
                                pass
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._decide(self.command, self.path)
                if fault is not None:
                    status, code = fault
                    payload = _ERROR_XML.format(code=code, message="injected by the fault proxy").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                try:
                    conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                except OSError:  # upstream down: vanish like a dead server
                    with proxy._lock:
                        proxy.dropped += 1
                    self.close_connection = True
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
