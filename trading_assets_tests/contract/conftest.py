"""One harness per broker for the cross-broker contract suite.

Each harness gives the suite the same handles whatever the broker: the broker under test,
its loopback fake (None for paper), a tradable symbol with a quote, how many orders the
server really holds, and how to make the broker refuse an order for a business reason.

Brokers whose factory is not importable yet are skipped with the reason; cases that do
not exist for a broker (paper has no session, no rate limit, no network) are skipped
with the reason by the test itself via `harness.require(concept)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from trading_assets.core.ports import Broker, OrderRequest, Side

BROKERS = ("paper", "alpaca", "ig", "tradovate")

# Which broker has which concept; a missing one is skipped with this reason.
NOT_APPLICABLE = {
    ("paper", "session"): "the paper broker has no session to expire",
    ("paper", "rate_limit"): "the paper broker has no server to rate-limit it",
    ("paper", "timeout"): "the paper broker has no network: an order call cannot time out",
    ("alpaca", "session"): "Alpaca authenticates each call with API keys; there is no "
                           "session to renew (a revoked key is covered by test_revoked_alpaca_keys_...)",
}


@dataclass
class Harness:
    kind: str
    broker: Broker
    fake: Any | None
    symbol: str
    qty: float
    price: float
    reject_reason: str = ""
    _paper_reject_qty: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def require(self, concept: str) -> None:
        """Skip the calling test if this broker has no such concept."""
        reason = NOT_APPLICABLE.get((self.kind, concept))
        if reason:
            pytest.skip(reason)

    def order(self, coid: str, side: Side = Side.BUY, qty: float | None = None) -> OrderRequest:
        return OrderRequest(client_order_id=coid, symbol=self.symbol, side=side,
                            qty=self.qty if qty is None else qty, reference_price=self.price)

    def order_count(self, client_order_id: str | None = None) -> int:
        """Orders the broker's server really holds (for paper: its own book)."""
        if self.fake is not None:
            return int(self.fake.order_count(client_order_id))
        orders = self.broker.orders()  # type: ignore[attr-defined]
        return sum(1 for o in orders
                   if client_order_id is None or o.client_order_id == client_order_id)

    def requests_seen(self) -> int:
        return 0 if self.fake is None else len(self.fake.requests)

    def arrange_reject(self, coid: str) -> tuple[OrderRequest, str]:
        """An order the broker will refuse, and words its reason must contain."""
        if self.fake is None:
            return self.order(coid, qty=self._paper_reject_qty), self.reject_reason
        self.fake.fault_reject_next(self.reject_reason)
        return self.order(coid), self.reject_reason


def _paper(tmp_path) -> AbstractContextManager[Harness]:
    from trading_assets.adapters.brokers.paper import PaperBroker

    @contextmanager
    def cm() -> Iterator[Harness]:
        broker = PaperBroker(tmp_path / "paper.sqlite", starting_cash=100_000.0)
        yield Harness("paper", broker, None, "AAPL", 10, 190.0,
                      reject_reason="insufficient buying power", _paper_reject_qty=1_000_000)
    return cm()


def _alpaca(tmp_path) -> AbstractContextManager[Harness]:
    from trading_assets_tests.fakes.alpaca import make_alpaca_under_test

    @contextmanager
    def cm() -> Iterator[Harness]:
        with make_alpaca_under_test() as (broker, fake):
            fake.set_price("AAPL", 190.0)
            yield Harness("alpaca", broker, fake, "AAPL", 10, 190.0,
                          reject_reason="insufficient buying power")
    return cm()


def _ig(tmp_path) -> AbstractContextManager[Harness]:
    from trading_assets_tests.fakes.ig import make_ig_under_test

    @contextmanager
    def cm() -> Iterator[Harness]:
        with make_ig_under_test() as (broker, fake):
            epic = "CS.D.EURUSD.MINI.IP"
            fake.set_price(epic, 1.0850)
            yield Harness("ig", broker, fake, epic, 1, 1.0850,
                          reject_reason="INSUFFICIENT_FUNDS")
    return cm()


def _tradovate(tmp_path) -> AbstractContextManager[Harness]:
    from trading_assets_tests.fakes.tradovate import make_tradovate_under_test

    @contextmanager
    def cm() -> Iterator[Harness]:
        with make_tradovate_under_test() as (broker, fake):
            fake.set_price("MESZ6", 5850.25)
            yield Harness("tradovate", broker, fake, "MESZ6", 1, 5850.25,
                          reject_reason="MaxPosLimitReached")
    return cm()


FACTORIES: dict[str, Callable[[Any], AbstractContextManager[Harness]]] = {
    "paper": _paper, "alpaca": _alpaca, "ig": _ig, "tradovate": _tradovate,
}


@pytest.fixture(params=BROKERS)
def harness(request, tmp_path) -> Iterator[Harness]:
    """The broker under test, wrapped in its harness (skipped if not importable yet)."""
    try:
        cm = FACTORIES[request.param](tmp_path)
    except ImportError as exc:  # a broker whose factory has not landed yet
        pytest.skip(f"{request.param} factory not available: {exc}")
    with cm as h:
        yield h
