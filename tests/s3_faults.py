"""A flaky HTTP proxy in front of a real S3 server, to prove that transient errors are retried.

`FlakyProxy(target_url, fail_first=3)` listens on 127.0.0.1 (a free port), answers the first
`fail_first` requests that match `methods` with `503 ServiceUnavailable` (an S3 XML error body), and
forwards everything else byte for byte, the Host header included, so SigV4 signatures still verify.
It is bounded: it fails at most `fail_first` requests, serves from daemon threads and shuts itself down
after `lifetime_s` even if the test forgets to stop it.

    with FlakyProxy(s3_endpoint, fail_first=3) as proxy:
        Storage.from_uri(f"s3://{bucket}", endpoint_url=proxy.url).write_bytes("k", b"v")
        assert proxy.failed == 3
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}
_ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>injected by FlakyProxy</Message></Error>"
)


class FlakyProxy:
    """A bounded fault-injecting proxy; see the module docstring."""

    def __init__(
        self,
        target_url: str,
        fail_first: int = 3,
        status: int = 503,
        methods: tuple[str, ...] | None = None,
        lifetime_s: float = 120.0,
    ) -> None:
        target = urllib.parse.urlsplit(target_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self.fail_first, self.status, self.methods = fail_first, status, methods
        self.requests = self.failed = 0
        self.log: list[tuple[str, str, int]] = []  # (method, path, status answered)
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    def start(self) -> FlakyProxy:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FlakyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def should_fail(self, method: str) -> bool:
        """Count a request; True if it is one of the first `fail_first` matching ones."""
        with self._lock:
            self.requests += 1
            if self.failed < self.fail_first and (self.methods is None or method in self.methods):
                self.failed += 1
                return True
            return False


def _handler_for(proxy: FlakyProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
            pass

        def _handle(self) -> None:
            body = _read_body(self)
            if proxy.should_fail(self.command):
                self._answer(proxy.status, {"Content-Type": "application/xml"}, _ERROR_BODY, close=True)
            else:
                self._forward(body)

        def _forward(self, body: bytes) -> None:
            conn = http.client.HTTPConnection(*proxy.target, timeout=60)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        conn.putheader(name, value)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                resp = conn.getresponse()
                data = resp.read()
                headers = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP}
                self._answer(resp.status, headers, data, close=False)
            finally:
                conn.close()

        def _answer(self, status: int, headers: dict[str, str], data: bytes, close: bool) -> None:
            with proxy._lock:
                proxy.log.append((self.command, self.path, status))
            self.send_response_only(status)
            for name, value in headers.items():
                if name.lower() != "content-length" or self.command == "HEAD":
                    self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request body, de-chunked if the client sent `Transfer-Encoding: chunked`."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
