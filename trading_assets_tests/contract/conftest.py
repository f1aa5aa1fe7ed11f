"""One harness per broker for the cross-broker contract suite.

Each harness gives the suite the same handles whatever the broker: the broker under test,
its loopback fake (None for paper), a tradable symbol with a quote, how many orders the
server really holds, how to make the broker refuse an order for a business reason, and
how to let the market move so an order that did not fill inside its POST can fill.

Alpaca and Tradovate also run as "fills later" variants: their fake answers every order
unfilled and fills it at the next market move, so no contract case may assume a fill
inside the POST. A case that needs a concept some broker does not have (paper has no
session, no rate limit, no network; IG deals never fill later) is generated only for the
brokers that have it (`brokers_with`), never collected and skipped. A factory that cannot
be imported fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from trading_assets.core.ports import Broker, Order, OrderRequest, Side

BROKERS = ("paper", "alpaca", "ig", "tradovate")
FILLS_LATER = ("alpaca", "tradovate")  # venues whose fake can fill after the POST

# Which broker lacks which concept, and why (cases needing it are not generated for it).
NOT_APPLICABLE = {
    ("paper", "session"): "the paper broker has no session to expire",
    ("paper", "rate_limit"): "the paper broker has no server to rate-limit it",
    ("paper", "timeout"): "the paper broker has no network: an order call cannot time out",
    ("paper", "fill_steps"): "the paper broker fills at the decision price inside the call",
    ("alpaca", "session"): "Alpaca authenticates each call with API keys; there is no "
                           "session to renew (a revoked key is covered by test_revoked_alpaca_keys_...)",
    ("ig", "fill_steps"): "IG OTC deals fill or reject at once; only the confirmation lags",
}


def brokers_with(*concepts: str, fills_later: bool = True) -> list[Any]:
    """Harness params for the brokers that have every concept in `concepts` (with the
    fills-later variants unless `fills_later=False`), for `indirect` parametrisation."""
    params = []
    for kind in BROKERS:
        if any((kind, c) in NOT_APPLICABLE for c in concepts):
            continue
        params.append(pytest.param((kind, False), id=kind))
        if fills_later and kind in FILLS_LATER:
            params.append(pytest.param((kind, True), id=f"{kind}-fills-later"))
    return params


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

    def fill_in_steps(self, fractions: list[float]) -> None:
        """From now on orders fill after the POST, one part of them per market move."""
        assert self.fake is not None, f"{self.kind} has no fake to fill later"
        self.fake.fill_in_steps(fractions)

    def market_moves(self) -> None:
        """The market trades once at the harness price (fills what can fill now)."""
        if self.fake is not None:
            self.fake.set_price(self.symbol, self.price)

    def settle(self, order: Order, moves: int = 5) -> Order:
        """The order once it is final: let the market move and poll, a bounded number of
        times (an order may be accepted unfilled and fill later)."""
        for _ in range(moves):
            if order.status.is_final:
                break
            self.market_moves()
            found = self.broker.get_order(order.client_order_id)
            assert found is not None, f"{order.client_order_id} vanished at {self.kind}"
            order = found
        return order


def _paper(tmp_path, fills_later: bool) -> AbstractContextManager[Harness]:
    from trading_assets.adapters.paper.broker import PaperBroker

    @contextmanager
    def cm() -> Iterator[Harness]:
        broker = PaperBroker(tmp_path / "paper.sqlite", starting_cash=100_000.0)
        yield Harness("paper", broker, None, "AAPL", 10, 190.0,
                      reject_reason="insufficient buying power", _paper_reject_qty=1_000_000)
    return cm()


def _alpaca(tmp_path, fills_later: bool) -> AbstractContextManager[Harness]:
    from trading_assets_tests.fakes.alpaca import make_alpaca_under_test

    @contextmanager
    def cm() -> Iterator[Harness]:
        with make_alpaca_under_test() as (broker, fake):
            fake.set_price("AAPL", 190.0)
            if fills_later:
                fake.fill_in_steps([1.0])
            yield Harness("alpaca", broker, fake, "AAPL", 10, 190.0,
                          reject_reason="insufficient buying power")
    return cm()


def _ig(tmp_path, fills_later: bool) -> AbstractContextManager[Harness]:
    from trading_assets_tests.fakes.ig import make_ig_under_test

    @contextmanager
    def cm() -> Iterator[Harness]:
        with make_ig_under_test() as (broker, fake):
            epic = "CS.D.EURUSD.MINI.IP"
            fake.set_price(epic, 1.0850)
            yield Harness("ig", broker, fake, epic, 1, 1.0850,
                          reject_reason="INSUFFICIENT_FUNDS")
    return cm()


def _tradovate(tmp_path, fills_later: bool) -> AbstractContextManager[Harness]:
    from trading_assets_tests.fakes.tradovate import make_tradovate_under_test

    @contextmanager
    def cm() -> Iterator[Harness]:
        with make_tradovate_under_test() as (broker, fake):
            fake.set_price("MESZ6", 5850.25)
            if fills_later:
                fake.fill_in_steps([1.0])
            yield Harness("tradovate", broker, fake, "MESZ6", 1, 5850.25,
                          reject_reason="MaxPosLimitReached")
    return cm()


FACTORIES: dict[str, Callable[[Any, bool], AbstractContextManager[Harness]]] = {
    "paper": _paper, "alpaca": _alpaca, "ig": _ig, "tradovate": _tradovate,
}


@pytest.fixture(params=brokers_with())
def harness(request, tmp_path) -> Iterator[Harness]:
    """The broker under test (a (kind, fills_later) param), wrapped in its harness."""
    kind, fills_later = request.param
    with FACTORIES[kind](tmp_path, fills_later) as h:
        yield h
