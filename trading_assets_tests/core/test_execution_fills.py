"""Fills that arrive after the POST, through the exactly-once core and the SQLite ledger.

Real brokers often answer an order unfilled and fill it later, in parts. The ledger must
follow: each `sync_open_intents` records the fill so far, so ledger positions equal the
broker's after every poll, and the final record equals the broker's fill. A ledger that
kept the first partial fill and ignored the growing one would drift from the broker and
stop the next tick at reconciliation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.execution import (
    account_key,
    client_order_id,
    ensure_baseline,
    execute_plan,
    reconcile,
    sync_open_intents,
)
from trading_assets.core.ports import OrderIntent, OrderStatus, Side
from trading_assets_tests.fakes.alpaca import make_alpaca_under_test
from trading_assets_tests.fakes.tradovate import make_tradovate_under_test

FLOW, KEY = "ema_concentration", "2025-11-26-10:00"


@dataclass(frozen=True)
class Venue:
    """A broker whose fake fills in parts, and the order to place there."""

    make: Any  # () -> context manager of (broker, fake)
    symbol: str
    qty: float
    fractions: tuple[float, ...]
    prices: tuple[float, ...]  # the market price at each move (one part fills per move)
    growth: tuple[float, ...]  # cumulative fill after each move


VENUES = {
    "alpaca": Venue(make_alpaca_under_test, "TQQQ", 10, (0.3, 0.3, 0.4), (50.0, 51.0, 52.0), (3, 6, 10)),
    "tradovate": Venue(make_tradovate_under_test, "MESZ6", 4, (0.25, 0.25, 0.5),
                       (5850.0, 5851.0, 5852.0), (1, 2, 4)),
}


@pytest.fixture(params=sorted(VENUES))
def venue(request) -> Iterator[tuple[Venue, Any, Any]]:
    spec = VENUES[request.param]
    cm: AbstractContextManager = spec.make()
    with cm as (broker, fake):
        fake.set_price(spec.symbol, spec.prices[0])
        fake.fill_in_steps(list(spec.fractions))
        yield spec, broker, fake


def _broker_positions(broker: Any) -> dict[str, float]:
    return {p.symbol: p.qty for p in broker.positions()}


def test_the_ledger_follows_a_partial_fill_poll_by_poll_to_the_brokers_fill(venue, tmp_path) -> None:
    spec, broker, fake = venue
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    account = account_key(broker, broker.account().account_id)
    ensure_baseline(broker, ledger, account, FLOW, datetime(2025, 11, 26, 15, 0, tzinfo=UTC))
    cid = client_order_id(FLOW, spec.symbol, KEY, "entry")
    plan = [OrderIntent(cid, FLOW, KEY, account, spec.symbol, Side.BUY, spec.qty, "entry", spec.prices[0])]

    report = execute_plan(broker, ledger, plan, FLOW, KEY)
    [intent] = ledger.intents(FLOW, KEY)
    assert report.submitted == [cid]
    assert intent.status in ("new", "accepted") and intent.filled_qty == 0
    assert ledger.net_positions(account) == {} and ledger.transactions(account).empty

    seen = []
    for price in spec.prices:
        fake.set_price(spec.symbol, price)  # the market trades: the next part fills
        sync_open_intents(broker, ledger, FLOW)
        [intent] = ledger.intents(FLOW, KEY)
        seen.append((intent.status, ledger.net_positions(account).get(spec.symbol, 0.0),
                     float(ledger.transactions(account)["qty"].sum())))
        assert reconcile(ledger.net_positions(account), _broker_positions(broker)) == []
    *partials, last = spec.growth
    assert seen == [("partially_filled", q, q) for q in partials] + [("filled", last, last)]

    order = broker.get_order(cid)
    assert order is not None and order.status is OrderStatus.FILLED
    [txn] = ledger.transactions(account).itertuples()
    assert (txn.qty, txn.price) == (pytest.approx(order.filled_qty), pytest.approx(order.filled_avg_price))
    [intent] = ledger.intents(FLOW, KEY)
    assert (intent.filled_qty, intent.filled_avg_price) == (order.filled_qty, order.filled_avg_price)
    assert ledger.net_positions(account) == {spec.symbol: pytest.approx(spec.qty)}
    assert ledger.intents(FLOW, open_only=True) == []  # final: later syncs leave it alone


def test_a_rerun_during_a_partial_fill_adopts_the_growing_order_and_posts_nothing(venue, tmp_path) -> None:
    """Rerunning the tick while the order is still filling must adopt it (recording the
    fill so far), never place a second order for the unfilled rest."""
    spec, broker, fake = venue
    ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    account = account_key(broker, broker.account().account_id)
    cid = client_order_id(FLOW, spec.symbol, KEY, "entry")
    plan = [OrderIntent(cid, FLOW, KEY, account, spec.symbol, Side.BUY, spec.qty, "entry", spec.prices[0])]
    execute_plan(broker, ledger, plan, FLOW, KEY)
    fake.set_price(spec.symbol, spec.prices[0])
    rerun = execute_plan(broker, ledger, plan, FLOW, KEY)
    assert rerun.adopted == [cid] and rerun.submitted == []
    assert fake.order_count(cid) == 1
    assert ledger.net_positions(account) == {spec.symbol: pytest.approx(spec.growth[0])}
    assert ledger.intents(FLOW, KEY)[0].status == "partially_filled"
