"""TwelveData against a loopback Twelve Data: credits, errors in HTTP 200, time zones."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from trading_assets.adapters.twelve_data.market_data import TwelveData
from trading_assets.core.bars import bar_problems
from trading_assets.core.ports import MarketData, MarketDataError, RateLimited, UnknownSymbolError
from trading_assets_tests.fakes.clock import FakeTime
from trading_assets_tests.fakes.twelve_data import API_KEY, FakeTwelveData

START, END = datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC)


def session_bars(day: str, seed: int) -> pd.DataFrame:
    starts = pd.date_range(f"{day} 09:30", f"{day} 16:00", freq="30min", inclusive="left", tz="America/New_York")
    close = 100 + np.random.default_rng(seed).normal(0, 1, len(starts)).cumsum()
    return pd.DataFrame(
        {"open": close, "high": close + 0.5, "low": close - 0.5, "close": close, "volume": 1000.0},
        index=starts,
    )


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime(pd.Timestamp("2024-03-12 15:00:10", tz="UTC").timestamp())


@pytest.fixture
def fake(clock: FakeTime) -> Iterator[FakeTwelveData]:
    server = FakeTwelveData(clock=clock.time)
    for i, sym in enumerate(["AAPL", "TQQQ", "MSFT"]):
        server.add_bars(
            sym,
            "30min",
            pd.concat([session_bars("2024-03-08", i), session_bars("2024-03-11", 10 + i)]),
        )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def provider(fake: FakeTwelveData, clock: FakeTime, **kw: object) -> TwelveData:
    kw.setdefault("credits_per_minute", None)
    return TwelveData(API_KEY, base_url=fake.url, sleep=clock.sleep, clock=clock.time, **kw)


def test_many_symbols_in_the_bar_schema(fake, clock) -> None:
    td = provider(fake, clock)
    assert isinstance(td, MarketData)
    frame = td.get_bars(["TQQQ", "AAPL"], START, END, "30min")
    assert bar_problems(frame, symbols=["AAPL", "TQQQ"]) == []
    assert frame.groupby("symbol").size().to_dict() == {"AAPL": 26, "TQQQ": 26}
    expected = fake.bars[("AAPL", "30min")]["close"].to_numpy()
    assert np.allclose(frame[frame["symbol"] == "AAPL"]["close"], expected, atol=1e-5)


def test_api_key_goes_in_a_header_never_the_url(fake, clock) -> None:
    provider(fake, clock).get_bars(["AAPL"], START, END, "30min")
    req = fake.series_requests()[0]
    assert req.headers["authorization"] == f"apikey {API_KEY}"
    assert "apikey" not in req.query


def test_pages_walk_back_without_gaps_or_duplicates(fake, clock) -> None:
    frame = provider(fake, clock, outputsize=10).get_bars(["AAPL"], START, END, "30min")
    assert len(fake.series_requests()) == 3
    assert len(frame) == 26 and not frame.index.duplicated().any()


@pytest.mark.parametrize("tz", ["UTC", "America/New_York"])
def test_session_open_maps_to_1430z_before_and_1330z_after_the_dst_switch(fake, clock, tz) -> None:
    frame = provider(fake, clock, timezone=tz).get_bars(["AAPL"], START, END, "30min")
    firsts = frame.groupby(frame.index.date).apply(lambda g: g.index.min().strftime("%H:%M"))
    assert list(firsts) == ["14:30", "13:30"]  # 09:30 EST on Mar 8, 09:30 EDT on Mar 11
    sent = fake.series_requests()[0].query
    assert sent["timezone"] == tz
    if tz == "America/New_York":
        assert sent["start_date"] == "2024-03-07 19:00:00"  # 00:00Z on Mar 8, New York time


def test_the_repeated_hour_of_the_autumn_switch_is_told_apart(fake, clock) -> None:
    starts = pd.date_range("2024-11-03 03:00", periods=6, freq="1h", tz="UTC")  # 23:00 .. 02:00 NY
    fx = pd.DataFrame(
        {"open": 1.08, "high": 1.09, "low": 1.07, "close": np.arange(6) + 1.0, "volume": np.nan},
        index=starts,
    )
    fake.add_bars("EUR/USD", "1h", fx, exchange_tz="UTC")
    frame = provider(fake, clock, timezone="America/New_York").get_bars(
        ["EUR/USD"], datetime(2024, 11, 3, tzinfo=UTC), datetime(2024, 11, 4, tzinfo=UTC), "1h"
    )
    assert list(frame.index) == list(starts)  # 01:00 EDT and 01:00 EST are different bars
    assert list(frame["close"]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert (frame["volume"] == 0.0).all()  # forex has no volume


def test_daily_rows_are_labelled_by_session_date(fake, clock) -> None:
    days = pd.DatetimeIndex(["2024-03-08", "2024-03-11"], tz="UTC")
    fake.add_bars(
        "AAPL",
        "1day",
        pd.DataFrame(
            {
                "open": [1.0, 2.0],
                "high": [1.5, 2.5],
                "low": [0.5, 1.5],
                "close": [1.0, 2.0],
                "volume": [5.0, 6.0],
            },
            index=days,
        ),
    )
    frame = provider(fake, clock, timezone="America/New_York").get_bars(["AAPL"], START, END, "1d")
    assert list(frame.index) == list(days)
    assert fake.series_requests()[0].query["interval"] == "1day"


@pytest.mark.parametrize("error_http", ["200", "code"])
def test_vendor_error_reaches_the_user_whether_http_200_or_not(fake, clock, error_http) -> None:
    fake.error_http = error_http
    fake.fault_error(
        403,
        "/time_series is available exclusively with pro or higher plans",
        http=200 if error_http == "200" else 403,
    )
    with pytest.raises(MarketDataError, match="exclusively with pro"):
        provider(fake, clock).get_bars(["AAPL"], START, END, "30min")


@pytest.mark.parametrize("error_http", ["200", "code"])
def test_unknown_symbol(fake, clock, error_http) -> None:
    fake.error_http = error_http
    with pytest.raises(UnknownSymbolError, match="NOPE"):
        provider(fake, clock).get_bars(["AAPL", "NOPE"], START, END, "30min")


def test_per_minute_limit_waits_for_the_next_minute_and_carries_on(fake, clock) -> None:
    fake.credits_per_minute = 2
    frame = provider(fake, clock).get_bars(["AAPL", "TQQQ", "MSFT"], START, END, "30min")
    assert set(frame["symbol"]) == {"AAPL", "TQQQ", "MSFT"}
    assert len(clock.sleeps) == 1 and clock.now % 60 == pytest.approx(1.0)  # just past the minute


def test_per_minute_limit_retries_are_bounded(fake, clock) -> None:
    fake.fault_minute_limit(times=5)
    with pytest.raises(RateLimited, match="per-minute"):
        provider(fake, clock, max_minute_retries=2).get_bars(["AAPL"], START, END, "30min")
    assert len(fake.series_requests()) == 3 and len(clock.sleeps) == 2


def test_daily_limit_stops_at_once_until_midnight(fake, clock) -> None:
    fake.credits_per_day = 1
    with pytest.raises(RateLimited, match="daily") as info:
        provider(fake, clock).get_bars(["AAPL", "TQQQ"], START, END, "30min")
    assert clock.sleeps == []
    assert info.value.retry_after == pytest.approx(9 * 3600 - 10)  # 15:00:10Z -> midnight


def test_client_side_limiter_keeps_under_the_vendor_limit(fake, clock) -> None:
    fake.credits_per_minute = 2
    td = provider(fake, clock, credits_per_minute=2)
    td.get_bars(["AAPL", "TQQQ", "MSFT"], START, END, "30min")
    assert td.limiter.waited > 0
    assert len(fake.series_requests()) == 3  # no request bounced off a 429


@pytest.mark.parametrize("fault", ["non_json", "empty_body", "server_error"])
def test_unreadable_answers_are_market_data_errors(fake, clock, fault) -> None:
    getattr(fake, f"fault_{fault}")()
    with pytest.raises(MarketDataError):
        provider(fake, clock).get_bars(["AAPL"], START, END, "30min")


def test_wrong_key_is_reported_without_the_key(fake, clock) -> None:
    td = TwelveData("not-the-key", base_url=fake.url, credits_per_minute=None)
    with pytest.raises(MarketDataError, match="401") as info:
        td.get_bars(["AAPL"], START, END, "30min")
    assert "not-the-key" not in str(info.value)


def test_empty_window_is_an_error_not_an_empty_frame(fake, clock) -> None:
    with pytest.raises(MarketDataError, match="No data"):
        provider(fake, clock).get_bars(
            ["AAPL"], datetime(2024, 3, 9, tzinfo=UTC), datetime(2024, 3, 10, tzinfo=UTC), "30min"
        )
