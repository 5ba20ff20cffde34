"""A loopback HTTP mirror of the weights catalogue: files by URL path, and ways to misbehave.

Example (the ``mirror`` fixture, imported by tests/conftest.py)::

    def test_x(mirror, monkeypatch):
        serve_entry(mirror, "biggan-deep-256", biggan_deep_files(CATALOG["biggan-deep-256"]), monkeypatch)

The fixture points ``GANGEO_MIRROR`` at the server (``<base>/<entry>/<file>``), ``GANGEO_HOME``
at an empty cache and allows downloads; the server is stopped after the test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
import time

import pytest

from geometry_core.generators.catalog import CATALOG, CatalogEntry
from geometry_core.weights_cache import OFFLINE_ENV_VARS

__all__ = ["Mirror", "mirror", "serve_entry"]


class Mirror:
    """Files by URL path (query strings ignored); ``cut[path] = n`` declares n bytes but sends fewer, then
    closes; ``unsized`` paths are sent without Content-Length; ``trickle[path] = s`` sends one byte every s
    seconds; ``moved[path] = url`` answers with a redirect there."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.unsized: set[str] = set()
        self.trickle: dict[str, float] = {}
        self.moved: dict[str, str] = {}
        self.requests: list[str] = []
        mirror = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                mirror.requests.append(path)
                if path in mirror.moved:
                    self.send_response(302)
                    self.send_header("Location", mirror.moved[path])
                    self.end_headers()
                    return
                body = mirror.files.get(path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if path not in mirror.unsized:
                    self.send_header("Content-Length", str(mirror.cut.get(path, len(body))))
                self.end_headers()
                try:
                    if path in mirror.trickle:
                        for i in range(len(body)):
                            self.wfile.write(body[i : i + 1])
                            self.wfile.flush()
                            time.sleep(mirror.trickle[path])
                    else:
                        self.wfile.write(body)  # HTTP/1.0: the connection closes after this
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a cap or a deadline)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A running mirror, ``GANGEO_MIRROR`` pointing at it, an empty ``GANGEO_HOME``, downloads allowed."""
    m = Mirror()
    monkeypatch.setenv("GANGEO_MIRROR", m.url)
    monkeypatch.setenv("GANGEO_HOME", str(tmp_path / "home"))
    for var in OFFLINE_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    yield m
    m.close()


def serve_entry(mirror: Mirror, name: str, files: dict[str, bytes], monkeypatch) -> CatalogEntry:
    """Serve ``files`` as entry ``name``; an entry with published hashes gets the served files' digests."""
    entry = CATALOG[name]
    for filename, body in files.items():
        mirror.files[f"/{name}/{filename}"] = body
    if any(f.sha256 for f in entry.files):
        digests = {fn: hashlib.sha256(body).hexdigest() for fn, body in files.items()}
        entry = dataclasses.replace(
            entry, files=tuple(dataclasses.replace(f, sha256=digests[f.filename]) for f in entry.files)
        )
        monkeypatch.setitem(CATALOG, name, entry)
    return entry
