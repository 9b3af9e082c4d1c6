"""A threaded HTTP server run in a daemon thread: the worker's SQL endpoint
(sinks/ch_http.py) and its ops endpoint (processors/metrics.py) both use it."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BackgroundHTTPServer:
    """``ThreadingHTTPServer`` on (host, port) (port 0: a free one) with ``owner`` set on the
    server, so handlers reach the object that serves through ``self.server.owner``."""

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], owner, name: str):
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = owner  # type: ignore[attr-defined]
        self.name = name
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{self.port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, name=f"{self.name}-{self.port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (waits for the serve loop, not for requests in flight) and close the socket."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
            self._thread = None
        self.httpd.server_close()
