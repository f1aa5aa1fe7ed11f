"""Smoke tests against real paper/demo accounts, opt-in: `pytest -m live trading_assets_tests/live`.

Each broker runs only when its credentials are in the environment (the same variables
production reads through `EnvVar`), never when `CI` is set, and never against a
real-money account: the resources default to paper/demo and the test refuses a live one.

    ALPACA_API_KEY, ALPACA_SECRET_KEY                        (paper account)
    IG_USERNAME, IG_PASSWORD, IG_API_KEY [IG_ACC_NUMBER]     (demo account)
    TRADOVATE_USERNAME, TRADOVATE_PASSWORD, TRADOVATE_APP_ID, TRADOVATE_CID, TRADOVATE_SEC
      [TRADOVATE_TEST_SYMBOL, TRADOVATE_TEST_LIMIT_PRICE: a far-from-market working order]

Orders placed here are limit orders far from the market, cancelled at once.
"""

from __future__ import annotations

import os
import uuid

import pytest

from trading_assets.core.ports import Account, OrderRequest, OrderStatus, Position, Side
from trading_assets.resources.brokers import broker_resource

pytestmark = pytest.mark.live

CREDENTIALS = {
    "alpaca": ("ALPACA_API_KEY", "ALPACA_SECRET_KEY"),
    "ig": ("IG_USERNAME", "IG_PASSWORD", "IG_API_KEY"),
    "tradovate": ("TRADOVATE_USERNAME", "TRADOVATE_PASSWORD", "TRADOVATE_APP_ID",
                  "TRADOVATE_CID", "TRADOVATE_SEC"),
}


@pytest.fixture(params=sorted(CREDENTIALS))
def live_broker(request):
    """A guarded paper/demo broker built from the environment, or a skip saying why."""
    if os.environ.get("CI"):
        pytest.skip("live broker tests never run in CI")
    if "live" not in (request.config.option.markexpr or ""):
        pytest.skip("opt-in: run with `pytest -m live`")
    missing = [v for v in CREDENTIALS[request.param] if not os.environ.get(v)]
    if missing:
        pytest.skip(f"{request.param}: credentials not set ({', '.join(missing)})")
    broker = broker_resource(request.param).get()
    if broker.live:
        pytest.skip(f"{request.param} is configured for a real-money account; refusing")
    yield broker
    close = getattr(broker.inner, "close", None)
    if callable(close):
        close()


def test_account_and_positions_read_back(live_broker) -> None:
    account = live_broker.account()
    assert isinstance(account, Account) and account.account_id and account.equity >= 0
    assert all(isinstance(p, Position) and p.qty != 0 for p in live_broker.positions())


def test_unknown_client_order_id_is_not_found(live_broker) -> None:
    assert live_broker.get_order(f"ta-live-none-{uuid.uuid4().hex[:10]}") is None


def _far_limit_order(kind: str) -> OrderRequest | None:
    coid = f"ta-live-{uuid.uuid4().hex[:12]}"
    if kind == "alpaca":
        return OrderRequest(coid, "SPY", Side.BUY, 1, order_type="limit", limit_price=1.0,
                            time_in_force="day")
    if kind == "tradovate":
        symbol = os.environ.get("TRADOVATE_TEST_SYMBOL")
        price = os.environ.get("TRADOVATE_TEST_LIMIT_PRICE")
        if symbol and price:
            return OrderRequest(coid, symbol, Side.BUY, 1, order_type="limit",
                                limit_price=float(price), time_in_force="day")
    return None


def test_far_limit_order_is_idempotent_and_cancels(live_broker) -> None:
    request = _far_limit_order(live_broker.name)
    if request is None:
        pytest.skip(f"{live_broker.name}: no safe far-from-market order configured")
    first = live_broker.submit_order(request)
    try:
        again = live_broker.submit_order(request)
        assert again.broker_order_id == first.broker_order_id
        assert first.status not in (OrderStatus.FILLED, OrderStatus.PARTIALLY_FILLED)
    finally:
        cancelled = live_broker.cancel_order(request.client_order_id)
    assert cancelled is not None and cancelled.status in (OrderStatus.CANCELED,
                                                          OrderStatus.EXPIRED)
