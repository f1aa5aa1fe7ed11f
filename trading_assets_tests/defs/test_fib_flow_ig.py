"""The Fibonacci flow through Dagster against IG's wire format: the real IGBroker (trading-ig)
on the loopback fake IG, the replay FX bars as prices. Deals carry their stopLevel and
limitLevel to IG; a stop IG triggers between ticks is found in IG's activity history and
booked to the tick of its bar; IG's rejects inside HTTP 200 are recorded with the reason,
told, and never resent; an IG session that expires in the middle of a run is renewed once.

The fake's clock runs on the replayed ticks' time, so IG's deal and activity times fall in
the bars they would have happened in."""

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from trading_assets import settings
from trading_assets.adapters.ig.broker import IGBroker, IGConnection
from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets.adapters.replay.market_data import ReplayMarketData
from trading_assets.adapters.safety import GuardedBroker
from trading_assets.core.execution import bracket_leg_id
from trading_assets.core.ports import IntentStatus
from trading_assets.defs.fib_retracement.assets import FLOW_ASSETS
from trading_assets.defs.fib_retracement.partitions import fx_bar_window
from trading_assets.defs.fib_retracement.settings import FibInstrument, FibRetracementSettings
from trading_assets.defs.resources import local_resources
from trading_assets.defs.tick_assets import RECONCILE_CHECK
from trading_assets.resources.base import BrokerResource
from trading_assets.resources.market_data import ReplayMarketDataResource
from trading_assets_tests.defs.conftest import check_results
from trading_assets_tests.fakes.ig import FakeIG

EPIC = "CS.D.EURUSD.MINI.IP"
ENTRY_TICK, EXIT_BAR, LATER_TICK = "2025-11-11-02:00", "2025-11-11-08:00", "2025-11-11-10:00"
SPREAD = 0.0002
_CONNECTIONS: dict[str, IGConnection] = {}
_FAKES: dict[str, FakeIG] = {}  # the broker reads IG's history window on IG's (replayed) clock
_EXPIRE_ON_BARS: dict[str, FakeIG] = {}


class IGOnFake(BrokerResource):
    """The IG broker resource's broker on the fake, with pacing that does not make a test
    wait (the real limiters allow 30 reads a minute)."""

    base_url: str

    def get(self):
        fake = _FAKES[self.base_url]
        broker = IGBroker("ig-user", "ig-pass", "ig-api-key", sleep=lambda _s: None, confirm_interval=0.0,
                          connection=_CONNECTIONS[self.base_url], clock=lambda: fake.now())
        return GuardedBroker(broker, live=False, kill_switch=settings.kill_switch_engaged)


class ExpiringReplay(ReplayMarketDataResource):
    """Replay prices that revoke IG's tokens while the bars are fetched: the orders step is
    then the first IG call of the run to meet the expired session."""

    base_url: str

    def get(self):
        fake = _EXPIRE_ON_BARS[self.base_url]

        class Expiring(ReplayMarketData):
            def get_bars(self, *args, **kwargs):
                fake.fault_expire_session()
                return super().get_bars(*args, **kwargs)

        return Expiring(session="fx")


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG(currency="USD", balance=10_000.0).start()
    url = server.base_url
    _FAKES[url] = server
    _CONNECTIONS[url] = IGConnection(
        server.username, server.password, server.api_key, base_url=url, timeout=2.0, sleep=lambda _s: None,
        trading_limiter=RateLimiter(10_000, 60.0), non_trading_limiter=RateLimiter(10_000, 60.0))
    try:
        yield server
    finally:
        _CONNECTIONS.pop(url, None)
        _FAKES.pop(url, None)
        server.stop()


def _close(key: str) -> float:
    start, end = fx_bar_window(key)
    bars = ReplayMarketData(session="fx").get_bars([EPIC], start, end, "1h")
    return float(bars["close"].iloc[-1])


def run(tmp_path, fake: FakeIG, key: str, size: float = 1.0, **resources) -> dg.ExecuteInProcessResult:
    """One tick, with IG quoting the bar's close and IG's clock just after the bar."""
    _, end = fx_bar_window(key)
    fake.now = lambda: end.to_pydatetime() + timedelta(seconds=20)
    fake.set_price(EPIC, _close(key), spread=SPREAD)
    world = local_resources(tmp_path, fib_retracement=FibRetracementSettings(
        instruments=[FibInstrument(epic=EPIC, size=size)]), fib_retracement_broker=IGOnFake(base_url=fake.base_url))
    return dg.materialize(FLOW_ASSETS, partition_key=key, raise_on_error=False, resources={**world, **resources})


def _deal_posts(fake: FakeIG) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/positions/otc") and fake.method_of(r) == "POST")


def _intents(tmp_path):
    return {i.leg: i for i in local_resources(tmp_path)["ledger"].get().intents("fib_retracement", ENTRY_TICK)}


def test_a_deal_carries_its_brackets_to_ig_and_igs_stop_is_booked_to_its_bars_tick(tmp_path, fake):
    assert run(tmp_path, fake, ENTRY_TICK).success
    legs = _intents(tmp_path)
    entry = legs["entry"]
    [deal] = fake.state.deals
    assert (deal.deal_reference, deal.direction, deal.size) == (entry.client_order_id, "BUY", 1.0)
    assert (deal.stop_level, deal.limit_level) == (entry.extra["stop_loss"], entry.extra["take_profit"])
    assert legs["entry:stop_loss"].status is legs["entry:take_profit"].status is IntentStatus.ACCEPTED

    # at 08:40 New York EURUSD falls through the stop; IG closes the deal (no tick runs until 10:00)
    fake.now = lambda: datetime(2025, 11, 11, 13, 40, tzinfo=UTC)
    fake.move_market(EPIC, [deal.stop_level + 0.0005, deal.stop_level - 0.0002], spread=SPREAD)
    assert fake.state.deals == []
    result = run(tmp_path, fake, LATER_TICK)
    assert result.success and check_results(result)[RECONCILE_CHECK]
    legs = _intents(tmp_path)
    stop = legs["entry:stop_loss"]
    assert stop.status is IntentStatus.FILLED and stop.filled_avg_price == pytest.approx(deal.stop_level - 0.0003)
    assert legs["entry:take_profit"].status is IntentStatus.CANCELED
    fills = local_resources(tmp_path)["ledger"].get().transactions(flow="fib_retracement")
    booked = fills.set_index("client_order_id")["partition_key"].to_dict()
    assert booked == {entry.client_order_id: ENTRY_TICK, bracket_leg_id(entry.client_order_id, "stop_loss"): EXIT_BAR}

    # a rerun of the entry's tick sends nothing to IG
    posts = fake.order_count()
    assert run(tmp_path, fake, ENTRY_TICK).success and fake.order_count() == posts


@pytest.mark.parametrize(("setup", "size", "reason"), [
    (lambda f: f.set_market_status(EPIC, "CLOSED"), 1.0, "MARKET_CLOSED"),
    (lambda f: f.set_dealing_rules(EPIC, min_deal_size=2.0), 1.0, "MINIMUM_ORDER_SIZE_ERROR"),
    (lambda f: f.set_dealing_rules(EPIC, min_stop_distance=0.01), 1.0, "ATTACHED_ORDER_LEVEL_ERROR"),
], ids=["market-closed", "below-minimum-size", "stop-too-close"])
def test_igs_rejects_inside_http_200_are_recorded_told_and_never_resent(tmp_path, fake, caplog, setup, size, reason):
    caplog.set_level(logging.WARNING, logger="trading_assets.notifications")
    setup(fake)
    result = run(tmp_path, fake, ENTRY_TICK, size=size)
    assert result.success and check_results(result)[RECONCILE_CHECK]  # a reject is an outcome, not a failure
    legs = _intents(tmp_path)
    assert legs["entry"].status is IntentStatus.REJECTED and reason in legs["entry"].reason
    assert legs["entry:take_profit"].status is legs["entry:stop_loss"].status is IntentStatus.CANCELED
    told = [r.getMessage() for r in caplog.records if r.name == "trading_assets.notifications"]
    assert any(m.startswith("order_rejected") and reason in m for m in told)
    assert fake.state.deals == [] and fake.order_count() == 0 and _deal_posts(fake) == 1
    assert run(tmp_path, fake, ENTRY_TICK, size=size).success
    assert _deal_posts(fake) == 1  # the rerun resolved the stored plan and sent nothing


def test_an_ig_session_that_expires_mid_run_is_renewed_once_and_the_deal_placed_once(tmp_path, fake):
    _CONNECTIONS[fake.base_url].login()  # the process's session, from an earlier tick
    _EXPIRE_ON_BARS[fake.base_url] = fake
    try:
        result = run(tmp_path, fake, ENTRY_TICK, fib_retracement_prices=ExpiringReplay(base_url=fake.base_url))
    finally:
        _EXPIRE_ON_BARS.pop(fake.base_url)
    assert result.success and check_results(result)[RECONCILE_CHECK]
    assert fake.logins == 2  # the earlier login, and one renewal after the bars step revoked the tokens
    entry = _intents(tmp_path)["entry"]
    assert entry.status is IntentStatus.FILLED and fake.order_count(entry.client_order_id) == 1
