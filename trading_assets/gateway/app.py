"""The webhook app: `create_app(queue, passphrase)` (module doc of `trading_assets.gateway`).

One request, in order (the first failing step answers, and nothing is stored before the
last one):
1. size: a Content-Length over the limit is a 413 before anything is read; the body is
   then read as a stream and counted, so a chunked or lying client is cut off at the
   limit too (413, connection closed);
2. JSON: the body, whatever its content type (TradingView sends application/json or
   text/plain), must be UTF-8 JSON holding an object (422 otherwise);
3. passphrase: the body's `passphrase` must be a string equal to the configured one,
   compared in constant time (401 otherwise; 503 if the configured one cannot be read);
4. fields: `parse_tradingview_alert` validates the shape and values, naming the first bad
   field; any number anywhere must be finite (422);
5. store: `queue.put(alert_id, envelope, symbol)`; True is 200 accepted, False (the id
   was stored before) 200 duplicate; an exception is a 503, so TradingView retries.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from trading_assets.adapters.tradingview.alerts import alert_content_id, parse_tradingview_alert
from trading_assets.core.messaging import AlertQueue
from trading_assets.gateway import envelope
from trading_assets.gateway.constants import HEALTH_PATH, MAX_BODY_BYTES, WEBHOOK_PATH
from trading_assets.gateway.passphrase import PassphraseCache, PassphraseUnavailable
from trading_assets.gateway.samples import samples
from trading_assets.gateway.schema import AlertAnswer, HealthAnswer, RejectedAnswer, UnavailableAnswer, request_body

log = logging.getLogger("trading_assets.gateway")

MAX_DEPTH = 32  # nesting levels of the alert JSON (the shapes use 2)
_ERROR_CHARS = 300  # an error quotes the bad value; keep answers and log lines short
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*): ")
# Fields the validator compares against a set of choices (an unhashable value there, a
# list or an object, must be a named 422 like any other bad value).
_CHOICES = ("indicator", "action", "signal.type", "signal.direction", "signal.trigger")
_PRICES = ("open", "high", "low", "close", "volume")


@dataclass
class Outcome:
    """One answer, plus what the request's log line says about it."""

    code: int
    body: dict[str, Any]
    alert_id: str | None = None
    symbol: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.body.get("status", ""))


def _short(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[:_ERROR_CHARS] + "…"


def rejected(error: str, field: str | None = None, code: int = 422) -> Outcome:
    return Outcome(code, {"status": "rejected", "error": _short(error), "field": field})


def _named(exc: Exception) -> Outcome:
    """A validator's ValueError (`signal.trigger: expected ...`) as a 422 naming the field."""
    message = " ".join(str(exc).split())
    m = _FIELD.match(message)
    name = m.group(1) if m else None
    return rejected(message, None if name == "alert" else name)


def _get(payload: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = payload
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _precheck(payload: Mapping[str, Any]) -> None:
    """What the validator assumes of a value before judging it: a choice is hashable (it
    is looked up in a set) and a number fits a float. Raises ValueError naming the field."""
    for path in _CHOICES:
        present, value = _get(payload, path)
        if present and isinstance(value, (list, dict)):
            raise ValueError(f"{path}: expected a string, got {type(value).__name__}")
    for name in _PRICES:
        present, value = _get(payload, f"price_data.{name}")
        if present and isinstance(value, int) and not isinstance(value, bool):
            try:
                float(value)
            except OverflowError:
                raise ValueError(f"price_data.{name}: expected a finite number, got an integer of "
                                 f"{len(str(abs(value)))} digits") from None


def _check_tree(payload: Mapping[str, Any]) -> None:
    """Every number in the alert is finite (NaN/Infinity are not JSON, but Python's parser
    takes them) and it nests at most MAX_DEPTH levels. Iterative: no recursion limit."""
    stack: list[tuple[str, Any, int]] = [("", payload, 1)]
    while stack:
        path, node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"{path or 'alert'}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(node, Mapping):
            stack.extend((f"{path}.{k}" if path else str(k), v, depth + 1) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{path}[{i}]", v, depth + 1) for i, v in enumerate(node))
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError(f"{path}: expected a finite number, got {node!r}")


class Gateway:
    """The request handling behind the routes; `create_app` wires it into FastAPI."""

    def __init__(self, queue: AlertQueue, passphrase: PassphraseCache, max_body_bytes: int = MAX_BODY_BYTES,
                 on_accepted: Callable[[str, str], None] | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.queue = queue
        self.passphrase = passphrase
        self.max_body_bytes = int(max_body_bytes)
        self.on_accepted = on_accepted
        self.clock = clock
        self.queue_kind = type(queue).__name__.removesuffix("AlertQueue").lower() or "queue"

    # ------------------------------------------------------------------ reading

    def _too_large(self, what: str) -> Outcome:
        out = rejected(f"body: {what} is over the limit of {self.max_body_bytes} bytes", code=413)
        out.extra_headers["Connection"] = "close"  # the rest of the body is not read
        return out

    async def read_body(self, request: Request) -> bytes | Outcome:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                return rejected(f"Content-Length: not a number: {declared!r}", "Content-Length", code=400)
            if length > self.max_body_bytes:
                return self._too_large(f"Content-Length {length}")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    return self._too_large(f"the body read so far ({size} bytes)")
                chunks.append(chunk)
        except ClientDisconnect:
            return rejected("body: the client went away before sending it all", code=400)
        return b"".join(chunks)

    # ------------------------------------------------------------------ deciding

    def process(self, raw: bytes, content_type: str, remote_addr: str) -> Outcome:
        """Steps 2-5 of the module doc (blocking: the passphrase may be fetched and the put
        waits for the store; run it in a worker thread)."""
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return rejected(f"body: not UTF-8 text ({exc.reason} at byte {exc.start})")
        try:
            payload = json.loads(text)
        except (ValueError, RecursionError) as exc:
            return rejected(f"body: malformed JSON: {exc}")
        if not isinstance(payload, dict):
            return rejected(f"alert: expected a JSON object, got {type(payload).__name__}")

        try:
            if not self.passphrase.matches(payload.get("passphrase")):
                return Outcome(401, {"status": "unauthorized", "error": "wrong or missing passphrase",
                                     "field": "passphrase"})
        except PassphraseUnavailable as exc:
            log.error("webhook passphrase unavailable: %s", exc)
            return Outcome(503, {"status": "unavailable", "error": "the gateway cannot check the passphrase "
                                                                   "right now; retry", "retry": True})

        try:
            _precheck(payload)
            event = parse_tradingview_alert(payload)
            _check_tree(payload)
            alert_id = alert_content_id(payload)
        except ValueError as exc:
            return _named(exc)
        except Exception as exc:  # a validator bug must not become a 5xx that TradingView retries
            log.exception("alert validation failed unexpectedly")
            return rejected(f"alert: could not be validated ({type(exc).__name__})")

        body = envelope.encode(alert_id, event.symbol, self.clock(), content_type, remote_addr, payload)
        try:
            stored = self.queue.put(alert_id, body, event.symbol)
        except Exception as exc:
            log.warning("alert %s (%s) not stored, answered 503 for a retry: %s: %s", alert_id, event.symbol,
                        type(exc).__name__, _short(str(exc)))
            return Outcome(503, {"status": "unavailable", "error": "the alert could not be stored; retry",
                                 "retry": True}, alert_id, event.symbol)
        return Outcome(200, {"status": "accepted" if stored else "duplicate", "alert_id": alert_id},
                       alert_id, event.symbol)

    def check(self) -> None:
        """Ready: the queue answers and the passphrase can be read (raises otherwise)."""
        self.queue.depth()
        self.passphrase.load()


def create_app(queue: AlertQueue, passphrase: Callable[[], str], *, max_body_bytes: int = MAX_BODY_BYTES,
               passphrase_ttl_seconds: float = 60.0, passphrase_recheck_seconds: float = 5.0,
               on_accepted: Callable[[str, str], None] | None = None) -> FastAPI:
    """The gateway's FastAPI app over `queue`. `passphrase` returns the configured shared
    secret (called at most once per `passphrase_ttl_seconds`, or `passphrase_recheck_seconds`
    after a mismatch, to follow a rotation). `on_accepted(alert_id, symbol)` is called
    after the answer for each newly stored alert (a hand-off to a worker; its failures are
    logged, never answered)."""
    gateway = Gateway(queue, PassphraseCache(passphrase, passphrase_ttl_seconds, passphrase_recheck_seconds),
                      max_body_bytes, on_accepted)
    app = FastAPI(
        title="trading_assets webhook gateway",
        description="TradingView alerts in, stored durably in the alert queue (SQLite locally, SQS FIFO on "
                    "AWS) before they are acknowledged. See docs/tradingview.md.",
        version="1",
    )
    app.state.gateway = gateway

    def hand_off(alert_id: str, symbol: str) -> None:
        try:
            gateway.on_accepted(alert_id, symbol)  # type: ignore[misc]
        except Exception:
            log.exception("on_accepted hook failed for alert %s (it is stored; the sensor will pick it up)",
                          alert_id)

    @app.post(
        WEBHOOK_PATH, summary="Receive one TradingView alert",
        description="Stores the alert in the queue (grouped by its symbol) and answers once it is durable. "
                    "Content type application/json or text/plain, the body is parsed as JSON either way.",
        openapi_extra={"requestBody": request_body(samples())},
        response_model=AlertAnswer,
        responses={
            401: {"model": RejectedAnswer, "description": "Wrong or missing passphrase; nothing stored"},
            413: {"model": RejectedAnswer, "description": f"Body over {max_body_bytes} bytes; nothing stored"},
            422: {"model": RejectedAnswer, "description": "Malformed JSON or an invalid field (named); nothing "
                                                          "stored"},
            503: {"model": UnavailableAnswer, "description": "Could not store it; retry (TradingView does)"},
        },
    )
    async def tradingview_webhook(request: Request) -> JSONResponse:
        started = time.perf_counter()
        remote = request.client.host if request.client else ""
        content_type = request.headers.get("content-type", "")[:200]
        read = await gateway.read_body(request)
        outcome = read if isinstance(read, Outcome) else await run_in_threadpool(
            gateway.process, read, content_type, remote)
        background = None
        if outcome.status == "accepted" and gateway.on_accepted is not None:
            background = BackgroundTask(hand_off, outcome.alert_id, outcome.symbol)
        log.info("%s %d %s alert_id=%s symbol=%s%s %.1f ms from %s", WEBHOOK_PATH, outcome.code, outcome.status,
                 outcome.alert_id or "-", outcome.symbol or "-",
                 f" field={outcome.body.get('field')} error={outcome.body.get('error')!r}"
                 if outcome.code >= 400 else "", (time.perf_counter() - started) * 1000, remote or "-")
        return JSONResponse(outcome.body, status_code=outcome.code, headers=outcome.extra_headers or None,
                            background=background)

    @app.get(HEALTH_PATH, summary="Ready: the queue is reachable and the passphrase readable",
             response_model=HealthAnswer, responses={503: {"model": UnavailableAnswer}})
    async def health() -> JSONResponse:
        try:
            await run_in_threadpool(gateway.check)
        except Exception as exc:
            log.warning("health: not ready: %s: %s", type(exc).__name__, _short(str(exc)))
            return JSONResponse({"status": "unavailable", "error": "not ready (see the gateway's log)",
                                 "retry": True}, status_code=503)
        return JSONResponse({"status": "ok", "queue": gateway.queue_kind})

    return app
