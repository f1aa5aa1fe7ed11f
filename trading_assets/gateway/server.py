"""Running the app on uvicorn: `serve` in the foreground (the CLI; stops on SIGINT or
SIGTERM after the requests in flight are answered), `start_in_thread` in the background
(tests, benchmarks, a process that embeds the gateway).

The socket is bound before uvicorn starts, so port 0 picks a free port and the caller
learns the real address (`on_listening`), and a port in use is an OSError up front.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

log = logging.getLogger("trading_assets.gateway")

GRACEFUL_SHUTDOWN_SECONDS = 5.0  # under ECS's 30 s stop timeout and the ALB's deregistration delay

#: uvicorn's own logging plus the gateway's per-request lines, on stderr; other loggers are
#: left as they are.
LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "trading_assets.gateway": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
    },
}


class CannotListen(OSError):
    """The address cannot be bound (in use, not this machine's, not permitted)."""


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6 by the host), SO_REUSEADDR;
    CannotListen saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CannotListen(f"{host}: not an address of this machine ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        sock.set_inheritable(True)
    except OSError as exc:
        sock.close()
        raise CannotListen(f"{host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def config(app: Any, *, log_config: dict[str, Any] | None = LOG_CONFIG) -> uvicorn.Config:
    """uvicorn's settings for the gateway: httptools and uvloop when installed (uvicorn
    [standard]), no access log (the app logs one line per webhook, without the body), no
    Server header, a bounded graceful shutdown."""
    return uvicorn.Config(app, access_log=False, server_header=False, log_config=log_config,
                          timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SECONDS), lifespan="off")


def serve(app: Any, host: str = "127.0.0.1", port: int = 8000,
          on_listening: Callable[[str], None] | None = None) -> int | None:
    """Serve until SIGINT or SIGTERM (in the main thread), then finish the requests in
    flight and return the signal's number (None if uvicorn stopped for another reason)."""
    sock = bind(host, port)
    server = uvicorn.Server(config(app))
    received: list[int] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn restores these handlers after its shutdown and re-raises the signal to
        # them: record it, so a clean stop is a return, not an exception.
        for signo in (signal.SIGINT, signal.SIGTERM):
            previous[signo] = signal.signal(signo, lambda s, _f: received.append(s))
    try:
        if on_listening is not None:
            on_listening(url_of(sock))
        server.run(sockets=[sock])
    finally:
        sock.close()
        for signo, handler in previous.items():
            signal.signal(signo, handler)
    return received[0] if received else None


@dataclass
class RunningGateway:
    """A gateway served from a background thread; `stop()` shuts it down gracefully."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()
        if self.thread.is_alive():
            raise RuntimeError(f"the gateway at {self.url} did not stop within {timeout:g} s")

    def __enter__(self) -> RunningGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, timeout: float = 10.0) -> RunningGateway:
    """Serve `app` from a daemon thread (port 0: a free one); returns once it accepts
    connections. Logging is left as configured (no uvicorn log config applied)."""
    sock = bind(host, port)
    server = uvicorn.Server(config(app, log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the gateway did not start (see the log)")
        time.sleep(0.01)
    return RunningGateway(url_of(sock), server, thread, sock)
