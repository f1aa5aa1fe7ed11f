"""Live IG prices behind a small `PriceStream` interface (Lightstreamer via trading-ig).

The knn_shadow flow resamples IG's tick stream to minutes. It only needs
"tell me each tick of these epics" and "stop", so that is the whole interface; the
Lightstreamer details stay here:

- `IGStreamService.create_session` logs in and connects, and calls `sys.exit(1)` if
  `connect()` raises. A library must not end the process (it would kill a Dagster run
  worker silently), so `SystemExit` is turned into `StreamingError`.
- `connect()` is asynchronous: success or an auth refusal arrive later through a
  `ClientListener`. `start()` waits (bounded) for CONNECTED or a server error.
- Ticks come from `CHART:{epic}:TICK` in DISTINCT mode (every tick, not a merged
  snapshot) with fields BID, OFR, UTM (epoch milliseconds, so no time-zone guessing).
- A callback that raises must not kill Lightstreamer's thread: it is logged and counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from lightstreamer.client import ClientListener, Subscription, SubscriptionListener
from trading_ig import IGStreamService

from trading_assets.adapters.ig.broker import IGConnection
from trading_assets.core.ports import BrokerError

logger = logging.getLogger(__name__)

TICK_FIELDS = ["BID", "OFR", "UTM"]


class Tick(NamedTuple):
    """One price change: (epic, timestamp UTC, bid, offer); a missing side is None."""

    epic: str
    timestamp: datetime
    bid: float | None
    offer: float | None


@runtime_checkable
class PriceStream(Protocol):
    """Push ticks of some epics to a callback until stopped."""

    def subscribe(self, epics: Sequence[str], on_tick: Callable[[Tick], None]) -> None: ...

    def stop(self) -> None: ...


class StreamingError(BrokerError):
    """The price stream could not be established or was refused by the server."""


def _number(value: Any) -> float | None:
    if value in (None, "", "#", "$"):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def tick_from_update(update: Any) -> Tick | None:
    """A Lightstreamer `ItemUpdate` of `CHART:{epic}:TICK` as a `Tick` (None if it
    carries no time)."""
    name = str(update.getItemName() or "")
    parts = name.split(":")
    epic = parts[1] if len(parts) >= 2 else name
    utm = _number(update.getValue("UTM"))
    if utm is None:
        return None
    return Tick(epic, datetime.fromtimestamp(utm / 1000.0, tz=UTC),
                _number(update.getValue("BID")), _number(update.getValue("OFR")))


class _TickListener(SubscriptionListener):
    def __init__(self, stream: IGPriceStream, on_tick: Callable[[Tick], None]) -> None:
        self._stream = stream
        self._on_tick = on_tick

    def onItemUpdate(self, update: Any) -> None:
        try:
            tick = tick_from_update(update)
            if tick is not None:
                self._on_tick(tick)
        except Exception:
            self._stream.callback_errors += 1
            logger.exception("IG tick callback failed; the stream goes on")

    def onSubscriptionError(self, code: Any, message: Any) -> None:
        self._stream.errors.append(f"subscription refused: {code} {message}")
        logger.error("IG stream subscription refused: %s %s", code, message)


class _StatusListener(ClientListener):
    def __init__(self, stream: IGPriceStream) -> None:
        self._stream = stream

    def onStatusChange(self, status: str) -> None:
        self._stream.status = status
        logger.info("IG stream status: %s", status)
        if status.startswith("CONNECTED"):
            self._stream._connected.set()

    def onServerError(self, code: Any, message: Any) -> None:
        self._stream.errors.append(f"server error {code}: {message}")
        logger.error("IG stream server error %s: %s", code, message)
        self._stream._connected.set()


class IGPriceStream:
    """`PriceStream` over IG's Lightstreamer endpoint (the login's lightstreamerEndpoint)."""

    def __init__(self, connection: IGConnection, *, connect_timeout: float = 10.0) -> None:
        self.conn = connection
        self.connect_timeout = connect_timeout
        self.service: IGStreamService | None = None
        self.status = "DISCONNECTED"
        self.errors: list[str] = []
        self.callback_errors = 0
        self._connected = threading.Event()
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Log in, connect, and wait until Lightstreamer says CONNECTED (or refuses)."""
        with self._lock:
            if self.service is not None:
                return
            self.errors.clear()
            svc = IGStreamService(self.conn.service)
            svc.acc_number = self.conn.acc_number
            try:
                if svc.acc_number is None:
                    svc.acc_number = self.conn.account_id()
                svc.create_session(version="2")
            except SystemExit as exc:  # trading-ig exits the process if connect() raises
                raise StreamingError(
                    "IG Lightstreamer connect failed (trading-ig tried to sys.exit)",
                    broker="ig") from exc
            except BrokerError:
                raise
            except Exception as exc:
                raise StreamingError(f"IG stream session failed: {exc}", broker="ig") from exc
            svc.add_client_listener(_StatusListener(self))
            if str(svc.ls_client.getStatus()).startswith("CONNECTED"):
                self._connected.set()
            self.service = svc
        if not self._connected.wait(self.connect_timeout):
            self.stop()
            raise StreamingError(
                f"IG stream not connected after {self.connect_timeout:.0f}s "
                f"(status {self.status})", broker="ig")
        if self.errors:
            problems = "; ".join(self.errors)
            self.stop()
            raise StreamingError(f"IG stream refused: {problems}", broker="ig")

    def subscribe(self, epics: Sequence[str], on_tick: Callable[[Tick], None]) -> None:
        """Call `on_tick` for every tick of `epics` (on Lightstreamer's thread)."""
        if not epics:
            return
        self.start()
        sub = Subscription(mode="DISTINCT",
                           items=[f"CHART:{epic}:TICK" for epic in dict.fromkeys(epics)],
                           fields=list(TICK_FIELDS))
        sub.addListener(_TickListener(self, on_tick))
        assert self.service is not None
        self.service.subscribe(sub)
        self._subscriptions.append(sub)

    def stop(self) -> None:
        """Unsubscribe everything and disconnect; safe to call twice."""
        with self._lock:
            svc, self.service = self.service, None
            self._subscriptions.clear()
            self._connected.clear()
        if svc is not None and svc.ls_client is not None:
            try:
                svc.disconnect()
            except Exception:
                logger.exception("IG stream disconnect failed")
        self.status = "DISCONNECTED"
