"""Base for loopback fake servers that speak a real API's wire format.

Each fake subclasses `FakeServer`, registers routes with `@route(METHOD, regex)`, keeps
its own state (orders, positions, tokens) and consults `self.faults` so a test can
script failures: `server.faults.add("timeout_after_accept", path="/v2/orders")`.

A fake that only returns canned success proves nothing: every fault a test names must
change what goes over the wire.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # dict/list -> JSON; bytes/str sent as-is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (client timeouts)


@dataclass
class Fault:
    kind: str
    path: str | None = None  # regex matched against the path; None = any
    method: str | None = None
    remaining: int = 1
    params: dict[str, Any] = field(default_factory=dict)


class Faults:
    """A script of faults, consumed in order by the fake's handlers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, kind: str, *, path: str | None = None, method: str | None = None,
            times: int = 1, **params: Any) -> None:
        with self._lock:
            self._faults.append(Fault(kind, path, method, times, params))

    def take(self, request: Request, kinds: tuple[str, ...] | None = None) -> Fault | None:
        """The first matching fault for this request (consumed), or None."""
        with self._lock:
            for fault in self._faults:
                if kinds is not None and fault.kind not in kinds:
                    continue
                if fault.method and fault.method.upper() != request.method:
                    continue
                if fault.path and not re.search(fault.path, request.path):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()


Handler = Callable[..., Response]


def route(method: str, pattern: str) -> Callable[[Handler], Handler]:
    """Mark a FakeServer method as the handler for METHOD on paths matching `pattern`
    (a full-match regex; named groups become keyword arguments)."""

    def deco(fn: Handler) -> Handler:
        fn._route = (method.upper(), re.compile(pattern))  # type: ignore[attr-defined]
        return fn

    return deco


class FakeServer:
    """A threaded HTTP server on 127.0.0.1 (free port) dispatching to @route methods."""

    def __init__(self) -> None:
        self.faults = Faults()
        self.requests: list[Request] = []  # everything received, for assertions
        self.lock = threading.RLock()
        self._routes = [
            (*getattr(self, name)._route, getattr(self, name))
            for name in dir(self)
            if callable(getattr(self, name, None)) and hasattr(getattr(self, name), "_route")
        ]
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    method=self.command,
                    path=parts.path,
                    query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                resp = server.dispatch(req)
                if resp.delay:
                    time.sleep(resp.delay)
                if isinstance(resp.body, (dict, list)):
                    payload = json.dumps(resp.body).encode()
                    ctype = "application/json"
                elif isinstance(resp.body, str):
                    payload, ctype = resp.body.encode(), "text/plain"
                elif resp.body is None:
                    payload, ctype = b"", "application/json"
                else:
                    payload, ctype = resp.body, "application/octet-stream"
                try:
                    self.send_response(resp.status)
                    headers = {"Content-Type": ctype, **resp.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- dispatch
    def method_of(self, req: Request) -> str:
        """The effective method (IG tunnels DELETE through POST + `_method` header)."""
        return req.method

    def dispatch(self, req: Request) -> Response:
        with self.lock:
            self.requests.append(req)
        method = self.method_of(req)
        for m, pattern, handler in self._routes:
            match = pattern.fullmatch(req.path)
            if m == method and match:
                return handler(req, **match.groupdict())
        return Response(404, {"message": f"fake: no route for {method} {req.path}"})
