"""Fault-injecting HTTP proxies in front of a real S3 server: transient errors, broken bodies, outages.

`FaultProxy(target_url)` listens on 127.0.0.1 (a free port) and forwards every request byte for byte,
the Host header included, so SigV4 signatures still verify. Its `fault` hook decides, per request,
whether to answer with a `Fault` instead:

- `Fault(status=503, code="ServiceUnavailable")`: an S3 XML error answer;
- `Fault(truncate=True)`: forward, then send only half of the response body and drop the connection
  (what a reset mid-download looks like to the client);
- `Fault(reset=True)`: drop the connection without answering;
- `Fault(delay_s=2.0)`: forward after a delay (a slow store).

`FlakyProxy(target_url, fail_first=3)` fails the first `fail_first` matching requests and forwards the
rest. `OutageProxy` switches between healthy, failing and slow windows of random length from a seeded
schedule (the fault-injection suite's S3 faults), and `begin_outage()` makes it fail every request until
`stop_faults()` (a long outage). Every proxy is bounded: it serves from daemon threads
and shuts itself down after `lifetime_s` even if the test forgets to stop it.

    with FlakyProxy(s3_endpoint, fail_first=3) as proxy:
        open_storage(f"s3://{bucket}", endpoint_url=proxy.url).write_bytes("k", b"v")
        assert proxy.failed == 3
"""

from __future__ import annotations

import http.client
import http.server
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one request instead of forwarding it plainly (see the module doc)."""

    status: int = 503
    code: str = "ServiceUnavailable"
    truncate: bool = False
    reset: bool = False
    delay_s: float = 0.0

    def error_body(self) -> bytes:
        return (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{self.code}</Code>'
                "<Message>injected by the test proxy</Message></Error>").encode()


class FaultProxy:
    """A bounded forwarding proxy; override `fault(method, path)` to inject faults."""

    def __init__(self, target_url: str, lifetime_s: float = 120.0) -> None:
        target = urllib.parse.urlsplit(target_url)
        self.target = (target.hostname or "127.0.0.1", target.port or 80)
        self.requests = self.failed = 0
        self.log: list[tuple[str, str, int]] = []  # (method, path, status answered; 0 = dropped)
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    def fault(self, method: str, path: str) -> Fault | None:
        """The fault for this request, or None to forward it (called once per request)."""
        return None

    def start(self) -> FaultProxy:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _decide(self, method: str, path: str) -> Fault | None:
        fault = self.fault(method, path)
        with self._lock:
            self.requests += 1
            self.failed += fault is not None and fault.delay_s == 0
        return fault


class FlakyProxy(FaultProxy):
    """Fails the first `fail_first` requests whose method is in `methods` (all when None)."""

    def __init__(self, target_url: str, fail_first: int = 3, status: int = 503,
                 methods: tuple[str, ...] | None = None, lifetime_s: float = 120.0,
                 code: str = "ServiceUnavailable", truncate: bool = False) -> None:
        super().__init__(target_url, lifetime_s)
        self.fail_first, self.methods = fail_first, methods
        self._fault = Fault(status=status, code=code, truncate=truncate)
        self._chosen = 0

    def fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            if self._chosen < self.fail_first and (self.methods is None or method in self.methods):
                self._chosen += 1
                return self._fault
        return None


class OutageProxy(FaultProxy):
    """Healthy, failing (503, reset or broken body) and slow windows of random length, from a seeded
    schedule, until `stop_faults()`; `windows` records (start offset s, length s, kind) for the report."""

    KINDS = ("fail", "reset", "truncate", "slow")

    def __init__(self, target_url: str, seed: int, max_window_s: float = 4.0, fault_share: float = 0.35,
                 lifetime_s: float = 600.0) -> None:
        super().__init__(target_url, lifetime_s)
        self.rng = random.Random(seed)
        self.max_window_s, self.fault_share = max_window_s, fault_share
        self.windows: list[tuple[float, float, str]] = []
        self._t0 = time.monotonic()
        self._until, self._kind, self._faults_on = 0.0, "ok", True

    def stop_faults(self) -> None:
        """Forward everything from now on (the rerun after a trial must see a healthy store)."""
        with self._lock:
            self._faults_on, self._kind = False, "ok"

    def begin_outage(self) -> None:
        """Answer every request with a 503 from now until `stop_faults()`: a store that is down."""
        with self._lock:
            self._faults_on, self._kind, self._until = True, "fail", float("inf")
            self.windows.append((round(time.monotonic() - self._t0, 2), float("inf"), "outage"))

    def fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            if not self._faults_on:
                return None
            now = time.monotonic() - self._t0
            if now >= self._until:
                self._kind = self.rng.choice(self.KINDS) if self.rng.random() < self.fault_share else "ok"
                length = self.rng.uniform(0.2, self.max_window_s)
                self._until = now + length
                if self._kind != "ok":
                    self.windows.append((round(now, 2), round(length, 2), self._kind))
            kind = self._kind
        return {"ok": None, "fail": Fault(), "reset": Fault(reset=True), "truncate": Fault(truncate=True),
                "slow": Fault(delay_s=self.rng.uniform(0.05, 0.5))}[kind]


def _handler_for(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output quiet
            pass

        def _handle(self) -> None:
            body = _read_body(self)
            fault = proxy._decide(self.command, self.path)
            if fault is None or fault.delay_s:
                time.sleep(fault.delay_s if fault else 0)
                self._forward(body, truncate=False)
            elif fault.reset:
                self._record(0)
                self.close_connection = True
            elif fault.truncate:
                self._forward(body, truncate=True)
            else:
                xml = {"Content-Type": "application/xml"}
                self._answer(fault.status, xml, fault.error_body(), close=True)

        def _forward(self, body: bytes, truncate: bool) -> None:
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
                # Only a body worth breaking is broken: a HEAD or an empty answer passes untouched.
                cut = len(data) // 2 if truncate and self.command == "GET" and len(data) > 1 else None
                self._answer(resp.status, headers, data, close=cut is not None, cut=cut)
            finally:
                conn.close()

        def _record(self, status: int) -> None:
            with proxy._lock:
                proxy.log.append((self.command, self.path, status))

        def _answer(self, status: int, headers: dict[str, str], data: bytes, close: bool,
                    cut: int | None = None) -> None:
            self._record(status)
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
                self.wfile.write(data if cut is None else data[:cut])

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request body, de-chunked if the client sent `Transfer-Encoding: chunked` (the benchmarks'
    counting proxy reads bodies the same way)."""
    from sjd_batch.commands.bench_s3 import read_body

    return read_body(handler)
