"""A small threaded HTTP proxy on 127.0.0.1 in front of an S3 endpoint (moto) that injects faults.

Requests are forwarded unchanged (path-style S3: ``/<bucket>/<key>``); a request whose object key
matches a ``FaultRule`` instead gets an S3 error reply (503 SlowDown, 500 InternalError, 403,
404 NoSuchKey...), extra latency, or a dropped connection, for its first ``times`` matches or for
ever. Every request is counted per (method, key). The proxy is bounded: past ``max_requests``
it answers 403 ``ProxyRequestCap`` (a permanent error, so clients stop) and it shuts itself down
after ``max_seconds``. Test utility only; loopback only.
"""

from __future__ import annotations

import http.client
import re
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "expect"}
_MESSAGES = {
    "SlowDown": "Please reduce your request rate.",
    "InternalError": "We encountered an internal error. Please try again.",
    "ServiceUnavailable": "Service is unable to handle request.",
    "AccessDenied": "Access Denied",
    "NoSuchKey": "The specified key does not exist.",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients that hang up (a timed-out slow read) are expected; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class FaultRule:
    """What to do with requests whose object key matches ``key`` (a regular expression).

    Attributes:
        key: regex searched in the object key (bucket-level requests such as listings never match).
        methods: HTTP methods the rule applies to.
        status: error status to answer with; None forwards the request (after ``delay_s``).
        code: S3 error code in the XML body (``SlowDown``, ``InternalError``, ``NoSuchKey``...).
        times: apply to the first ``times`` matching requests only; None = every one.
        delay_s: latency added before answering or forwarding (a slow read).
        drop: close the connection without any reply (a reset mid-request).
    """

    key: str
    methods: tuple[str, ...] = ("GET",)
    status: int | None = 503
    code: str = "SlowDown"
    times: int | None = None
    delay_s: float = 0.0
    drop: bool = False
    hits: int = field(default=0, init=False)

    def claim(self, method: str, key: str) -> bool:
        """Whether this request is one the rule acts on (counts it if so; call under a lock)."""
        if not key or method not in self.methods or not re.search(self.key, key):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


class S3FaultProxy:
    """Forward S3 requests to ``upstream`` and inject faults by rule.

    Args:
        upstream: the real endpoint, e.g. ``http://127.0.0.1:5000``.
        max_requests: cap on requests served (later ones get a permanent 403).
        max_seconds: the proxy stops itself after this long.
    """

    def __init__(
        self, upstream: str, max_requests: int = 20_000, max_seconds: float = 300.0
    ) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.rules: list[FaultRule] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[tuple[str, str]] = Counter()  # (kind, key) of every injected fault
        self.total = 0
        self.capped = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    @property
    def endpoint(self) -> str:
        """The proxy's URL (valid once started)."""
        if self._server is None:
            raise RuntimeError("proxy not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> S3FaultProxy:
        """Serve on a free loopback port in a daemon thread."""
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._timer = threading.Timer(self.max_seconds, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        server, self._server = self._server, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()

    def __enter__(self) -> S3FaultProxy:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add(self, rule: FaultRule) -> FaultRule:
        """Install a rule (rules are tried in order; the first that claims a request wins)."""
        with self._lock:
            self.rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        """Uninstall one rule: the fault it injected clears up."""
        with self._lock:
            self.rules = [r for r in self.rules if r is not rule]

    def requests(self, key_pattern: str, method: str = "GET") -> int:
        """Requests served with ``method`` for keys matching ``key_pattern``."""
        with self._lock:
            return sum(n for (m, k), n in self.counts.items()
                       if m == method and re.search(key_pattern, k))

    def decide(self, method: str, key: str) -> FaultRule | None:
        """Count the request and return the rule acting on it, if any."""
        with self._lock:
            self.total += 1
            self.counts[(method, key)] += 1
            if self.total > self.max_requests:
                self.capped = True
                return FaultRule(key=".*", methods=(method,), status=403, code="ProxyRequestCap")
            for rule in self.rules:
                if rule.claim(method, key):
                    kind = "drop" if rule.drop else str(rule.status or f"delay{rule.delay_s:g}s")
                    self.faults[(kind, key)] += 1
                    return rule
        return None

    def forward(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes) -> tuple[
        int, str, list[tuple[str, str]], bytes
    ]:
        """Send one request upstream unchanged (same Host header: the signature covers it)."""
        conn = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()


def object_key(path: str) -> str:
    """The object key of a path-style S3 request (``/bucket/key?query``), '' for bucket requests."""
    parts = urlsplit(path).path.lstrip("/").split("/", 1)
    return unquote(parts[1]) if len(parts) == 2 else ""


def error_body(code: str, key: str) -> bytes:
    """An S3 XML error document."""
    message = _MESSAGES.get(code, code)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message><Key>{key}</Key>"
        "<RequestId>fault-proxy</RequestId></Error>"
    ).encode()


def _handler_for(proxy: S3FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients pool connections as with real S3

        def log_message(self, format: str, *args: object) -> None:
            """Silent: the counters are the record."""

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            body = self._body()
            key = object_key(self.path)
            rule = proxy.decide(self.command, key)
            if rule is not None and rule.delay_s:
                time.sleep(rule.delay_s)
            if rule is not None and rule.drop:
                self.close_connection = True  # the socket closes with no reply at all
                return
            if rule is not None and rule.status is not None:
                payload = b"" if self.command == "HEAD" else error_body(rule.code, key)
                self._reply(rule.status, rule.code, [("Content-Type", "application/xml")], payload)
                return
            try:
                status, reason, headers, payload = proxy.forward(
                    self.command, self.path, list(self.headers.items()), body
                )
            except OSError as exc:  # upstream gone (e.g. during teardown): a gateway error
                status, reason, headers = 502, "Bad Gateway", [("Content-Type", "application/xml")]
                payload = error_body("BadGateway", f"{type(exc).__name__}: {exc}")
            self._reply(status, reason, headers, payload)

        def _reply(
            self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes
        ) -> None:
            self.send_response_only(status, reason)
            length = None
            for name, value in headers:
                if name.lower() == "content-length":
                    length = value
                elif name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            # A HEAD reply carries the object's length but no body.
            head = self.command == "HEAD" and length is not None
            self.send_header("Content-Length", length if head else str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
