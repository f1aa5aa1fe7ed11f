"""Safety switches in front of any broker: a kill switch and the live-trading gate.

`GuardedBroker` wraps a `Broker` and refuses to place orders (`submit_order`,
`close_position`) when

- the **kill switch** is engaged: a flag or a callable evaluated at *call time* (the
  resources pass `trading_assets.settings.kill_switch_engaged`, which reads
  `TRADING_KILL_SWITCH`), so flipping it stops order placement without a redeploy
  -> `KillSwitchEngaged`;
- the inner broker trades **real money** and live trading was not switched on
  explicitly (`live_trading=True`) -> `LiveTradingNotEnabled`.

Reads, lookups and cancels always pass: during an incident you still want to see the
account and pull working orders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from trading_assets.core.ports import (
    Account,
    Broker,
    KillSwitchEngaged,
    LiveTradingNotEnabled,
    Order,
    OrderRequest,
    Position,
)

log = logging.getLogger(__name__)

def is_live_broker(broker: object) -> bool:
    """Best-effort: does this adapter trade real money? (Tradovate `is_live`, Alpaca
    `paper=False`, IG `acc_type == "live"`.) Resources pass `live=` explicitly instead."""
    if hasattr(broker, "is_live"):
        return bool(broker.is_live)
    if getattr(broker, "paper", True) is False:
        return True
    conn = getattr(broker, "conn", None)
    acc_type = getattr(conn, "acc_type", None) or getattr(broker, "acc_type", None)
    return str(acc_type or "").lower() == "live"


class GuardedBroker:
    """A `Broker` that enforces the kill switch and the live-trading gate (see module)."""

    def __init__(
        self,
        inner: Broker,
        *,
        live: bool | None = None,
        live_trading: bool = False,
        kill_switch: bool | Callable[[], bool] = False,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.live = is_live_broker(inner) if live is None else bool(live)
        self.live_trading = bool(live_trading)
        self._kill_switch = kill_switch

    def __repr__(self) -> str:
        return (f"GuardedBroker({self.inner!r}, live={self.live}, "
                f"live_trading={self.live_trading})")

    def __getattr__(self, attr: str) -> Any:
        # Adapter extras (paper `orders()`, `close()`, ...) stay reachable; they do not
        # place orders. Only called for attributes GuardedBroker itself lacks.
        if attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    # ------------------------------------------------------------------ switches
    def kill_switch_engaged(self) -> bool:
        """The flag, or the callable evaluated now."""
        return bool(self._kill_switch() if callable(self._kill_switch) else self._kill_switch)

    def _check_may_trade(self, what: str) -> None:
        if self.kill_switch_engaged():
            log.warning("kill switch engaged: refused %s on %s", what, self.name)
            raise KillSwitchEngaged(
                f"kill switch engaged (TRADING_KILL_SWITCH): refused {what} "
                f"on {self.name}", broker=self.name, reason="kill switch")
        if self.live and not self.live_trading:
            raise LiveTradingNotEnabled(
                f"{self.name} is a live (real-money) account and live trading is not "
                f"enabled: refused {what}. Set live_trading=True explicitly to allow it.",
                broker=self.name, reason="live trading not enabled")

    # ------------------------------------------------------------------ orders
    def submit_order(self, request: OrderRequest) -> Order:
        self._check_may_trade(f"order {request.client_order_id}")
        return self.inner.submit_order(request)

    def close_position(self, symbol: str, client_order_id: str) -> Order | None:
        self._check_may_trade(f"close of {symbol} ({client_order_id})")
        return self.inner.close_position(symbol, client_order_id)

    # ------------------------------------------------------------------ always allowed
    def account(self) -> Account:
        return self.inner.account()

    def positions(self) -> list[Position]:
        return self.inner.positions()

    def get_order(self, client_order_id: str) -> Order | None:
        return self.inner.get_order(client_order_id)

    def cancel_order(self, client_order_id: str) -> Order | None:
        return self.inner.cancel_order(client_order_id)

    def observe_prices(self, prices: Mapping[str, float], as_of: datetime) -> None:
        self.inner.observe_prices(prices, as_of)
