"""A fault-injecting HTTP proxy for an S3 server (moto), switchable at run time.

    proxy = FaultProxy("http://127.0.0.1:PORT")   # the S3 endpoint behind it
    proxy.start()                                 # listens on 127.0.0.1:proxy.port
    proxy.mode = "500"                            # from now on
    proxy.stop()

Modes:
- "pass": every request is forwarded to the upstream and its answer sent back (the default);
- "500": every request is answered 500 with an S3 `InternalError` XML body;
- "503": every request is answered 503 with `Retry-After: 7` and an S3 `SlowDown` XML body;
- "hang": the request (headers and body) is read and never answered; the connection is closed
  without an answer once the mode changes or the proxy stops.

Requests are read whole (Content-Length or chunked bodies) before anything is decided, so a
fault never cuts a client off mid-send. Answers carry Content-Length; connections are kept
alive as HTTP/1.1 allows. `requests` counts what arrived in each mode (`counts[mode]`).
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

MODES = ("pass", "500", "503", "hang")
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade",
}
RETRY_AFTER = "7"


def s3_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>fault-proxy</RequestId><HostId>fault-proxy</HostId></Error>"
    ).encode()


class FaultProxy:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        assert parts.scheme == "http", f"the fault proxy speaks plain HTTP only: {upstream}"
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self._mode = "pass"
        self.changed = threading.Condition()
        self.stopping = False
        self.counts: Counter = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread: threading.Thread | None = None

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        assert value in MODES, value
        with self.changed:
            self._mode = value
            self.changed.notify_all()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, name="s3-fault-proxy", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=10)

    def _hang(self) -> None:
        """Returns once the mode is no longer "hang" or the proxy stops."""
        with self.changed:
            while self._mode == "hang" and not self.stopping:
                self.changed.wait(timeout=1)

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):  # noqa: A002 - quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes,
                        length: str | None = None) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                # A HEAD's answer announces the length of what a GET would send.
                self.send_header("Content-Length", length if length is not None else str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self) -> None:
                body = self._body()
                mode = proxy.mode
                proxy.counts[mode] += 1
                if mode == "500":
                    self._answer(500, [("Content-Type", "application/xml")],
                                 s3_error("InternalError", "We encountered an internal error. Please try again."))
                    return
                if mode == "503":
                    self._answer(503, [("Content-Type", "application/xml"), ("Retry-After", RETRY_AFTER)],
                                 s3_error("SlowDown", "Please reduce your request rate."))
                    return
                if mode == "hang":
                    proxy._hang()
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    headers["Content-Length"] = str(len(body))
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = [(k, v) for k, v in resp.getheaders()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "content-length"]
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                    self._answer(resp.status, out, data, length)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

        return Handler
