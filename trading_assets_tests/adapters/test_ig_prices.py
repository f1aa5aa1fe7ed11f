"""IGPrices through the real trading-ig library against the loopback IG fake."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from trading_assets.adapters.ig.broker import IGConnection
from trading_assets.adapters.ig.prices import IGPrices, ig_resolution
from trading_assets.core.bars import bar_problems
from trading_assets.core.ports import MarketData, RateLimited, UnknownSymbolError
from trading_assets_tests.fakes.ig import FakeIG

EURUSD = "CS.D.EURUSD.MINI.IP"
GBPUSD = "CS.D.GBPUSD.MINI.IP"
NOW = datetime(2024, 11, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG().start()
    try:
        yield server
    finally:
        server.stop()


def make_prices(fake: FakeIG, **kw: object) -> IGPrices:
    return IGPrices(fake.username, fake.password, fake.api_key, base_url=fake.base_url,
                    timeout=2.0, page_wait=0, clock=lambda: NOW, sleep=lambda _s: None, **kw)


def price_requests(fake: FakeIG) -> list:
    return [r for r in fake.requests if "/prices/" in r.path]


def expected(epic: str, start: datetime, hours: int) -> pd.DataFrame:
    rows = [FakeIG.bar_for(epic, start + timedelta(hours=h), 3600) for h in range(hours)]
    idx = pd.DatetimeIndex([start + timedelta(hours=h) for h in range(hours)], name="timestamp")
    return pd.DataFrame(rows, index=idx)


def test_is_a_market_data_provider(fake: FakeIG) -> None:
    assert isinstance(make_prices(fake), MarketData)


def test_hourly_mid_bars_in_the_project_schema(fake: FakeIG) -> None:
    start = datetime(2024, 1, 2, 10, tzinfo=UTC)
    bars = make_prices(fake).get_bars([EURUSD], start, start + timedelta(hours=6), "1h")
    assert bar_problems(bars, symbols=[EURUSD],
                        last_bar_start=pd.Timestamp(start + timedelta(hours=5))) == []
    want = expected(EURUSD, start, 6)
    assert list(bars.index) == list(want.index)
    for col in ("open", "high", "low", "close"):
        assert bars[col].to_numpy() == pytest.approx(want[col].to_numpy())
    assert (bars["volume"] >= 100).all()
    [req] = price_requests(fake)
    assert req.headers["version"] == "3" and req.query["resolution"] == "HOUR"


def test_many_symbols_stack_sorted(fake: FakeIG) -> None:
    start = datetime(2024, 1, 2, 10, tzinfo=UTC)
    bars = make_prices(fake).get_bars([GBPUSD, EURUSD], start, start + timedelta(hours=3), "1h")
    assert list(bars["symbol"]) == [EURUSD] * 3 + [GBPUSD] * 3
    assert bar_problems(bars, symbols=[EURUSD, GBPUSD]) == []


def test_several_pages_are_stitched_together(fake: FakeIG) -> None:
    start = datetime(2024, 1, 8, 0, tzinfo=UTC)
    bars = make_prices(fake, page_size=5).get_bars([EURUSD], start,
                                                   start + timedelta(hours=12), "1h")
    assert len(bars) == 12
    assert list(bars.index) == list(expected(EURUSD, start, 12).index)
    pages = [int(r.query["pageNumber"]) for r in price_requests(fake)]
    assert pages == [1, 2, 3]


@pytest.mark.parametrize("with_utc_field", [True, False])
@pytest.mark.parametrize(
    "start",
    [datetime(2024, 3, 30, 22, tzinfo=UTC),   # UK clocks go forward at 01:00 UTC on 31 Mar
     datetime(2024, 10, 26, 22, tzinfo=UTC)],  # and back at 01:00 UTC on 27 Oct
    ids=["spring-forward", "fall-back"],
)
def test_bars_are_utc_across_uk_dst_changes(fake: FakeIG, start: datetime,
                                            with_utc_field: bool) -> None:
    fake.include_snapshot_utc = with_utc_field
    bars = make_prices(fake).get_bars([EURUSD], start, start + timedelta(hours=6), "1h")
    want = expected(EURUSD, start, 6)
    assert list(bars.index) == list(want.index)  # hourly, no gap, no duplicate, UTC
    assert bars["close"].to_numpy() == pytest.approx(want["close"].to_numpy())


def test_summer_bars_from_uk_local_times_are_shifted_by_an_hour(fake: FakeIG) -> None:
    fake.include_snapshot_utc = False
    start = datetime(2024, 7, 1, 9, tzinfo=UTC)  # 10:00 BST
    bars = make_prices(fake).get_bars([EURUSD], start, start + timedelta(hours=2), "1h")
    assert list(bars.index) == [pd.Timestamp("2024-07-01 09:00", tz="UTC"),
                                pd.Timestamp("2024-07-01 10:00", tz="UTC")]


def test_exhausted_weekly_allowance_is_rate_limited_with_its_reset_time(fake: FakeIG) -> None:
    prices = make_prices(fake)
    start = datetime(2024, 1, 2, 10, tzinfo=UTC)
    prices.get_bars([EURUSD], start, start + timedelta(hours=2), "1h")
    fake.fault_historical_allowance()
    with pytest.raises(RateLimited) as info:
        prices.get_bars([EURUSD], start, start + timedelta(hours=2), "1h")
    resets = NOW + timedelta(seconds=fake.allowance_expiry)
    assert resets.isoformat(timespec="seconds") in str(info.value)
    assert info.value.retry_after == pytest.approx(fake.allowance_expiry)
    # Known to be used up: the next call does not even ask IG.
    asked = len(price_requests(fake))
    with pytest.raises(RateLimited):
        prices.get_bars([EURUSD], start, start + timedelta(hours=2), "1h")
    assert len(price_requests(fake)) == asked


def test_allowance_running_out_between_pages(fake: FakeIG) -> None:
    fake.remaining_allowance = 7  # page 1 (5 points) fits, page 2 does not
    with pytest.raises(RateLimited, match="reset time unknown"):
        make_prices(fake, page_size=5).get_bars(
            [EURUSD], datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC), "1h")
    assert [r.query["pageNumber"] for r in price_requests(fake)] == ["1", "2"]


def test_unknown_epic(fake: FakeIG) -> None:
    fake.unknown_epics.add("CS.D.NOPE.MINI.IP")
    with pytest.raises(UnknownSymbolError):
        make_prices(fake).get_bars(["CS.D.NOPE.MINI.IP"], datetime(2024, 1, 2, tzinfo=UTC),
                                   datetime(2024, 1, 3, tzinfo=UTC), "1h")


def test_expired_session_is_renewed(fake: FakeIG) -> None:
    prices = make_prices(fake)
    start = datetime(2024, 1, 2, 10, tzinfo=UTC)
    prices.get_bars([EURUSD], start, start + timedelta(hours=1), "1h")
    fake.fault_expire_session()
    assert len(prices.get_bars([EURUSD], start, start + timedelta(hours=1), "1h")) == 1
    assert fake.logins == 2


def test_shares_a_connection_with_the_broker(fake: FakeIG) -> None:
    conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url,
                        timeout=2.0)
    prices = IGPrices(connection=conn, page_wait=0)
    start = datetime(2024, 1, 2, 10, tzinfo=UTC)
    prices.get_bars([EURUSD], start, start + timedelta(hours=1), "1h")
    prices.get_bars([GBPUSD], start, start + timedelta(hours=1), "1h")
    assert fake.logins == 1


def test_intervals(fake: FakeIG) -> None:
    assert ig_resolution("1min") == "1Min" and ig_resolution("1d") == "D"
    with pytest.raises(ValueError, match="IG has no"):
        ig_resolution("7min")
    start = datetime(2024, 1, 2, 10, tzinfo=UTC)
    bars = make_prices(fake).get_bars([EURUSD], start, start + timedelta(minutes=15), "5min")
    assert list(bars.index.minute) == [0, 5, 10]
    assert price_requests(fake)[0].query["resolution"] == "MINUTE_5"
