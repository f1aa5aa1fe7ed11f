"""YFinanceProvider: the real yfinance, its session redirected to a loopback Yahoo.

The suite conftest sets YF_DISABLE_CURL_CFFI=1 so yfinance uses `requests`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from yfinance.data import YfData

from trading_assets.adapters.yfinance.market_data import YahooSession, YFinanceProvider
from trading_assets.core.bars import bar_problems
from trading_assets.core.ports import MarketData, MarketDataError, RateLimited, UnknownSymbolError
from trading_assets_tests.fakes.yahoo import FakeYahoo

START, END = datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC)


def session_bars(day: str, minutes: int, seed: int) -> pd.DataFrame:
    starts = pd.date_range(
        f"{day} 09:30", f"{day} 16:00", freq=f"{minutes}min", inclusive="left", tz="America/New_York"
    )
    close = 100 + np.random.default_rng(seed).normal(0, 1, len(starts)).cumsum()
    return pd.DataFrame(
        {
            "open": close - 0.2,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": np.arange(len(starts)) + 1000,
        },
        index=starts,
    )


@pytest.fixture(scope="module")
def tz_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("yf-tz-cache")


@pytest.fixture
def yahoo(tz_cache: Path) -> Iterator[tuple[YFinanceProvider, FakeYahoo]]:
    YfData.cache_get.cache_clear()  # yfinance memoises past date ranges per process
    fake = FakeYahoo()
    for i, sym in enumerate(["AAPL", "TQQQ"]):
        fake.add_bars(
            sym, "15m", pd.concat([session_bars("2024-03-08", 15, i), session_bars("2024-03-11", 15, 10 + i)])
        )
        fake.add_bars(sym, "1h", pd.concat([session_bars("2024-03-08", 60, i), session_bars("2024-03-11", 60, 10 + i)]))
    fake.start()
    try:
        provider = YFinanceProvider(session=YahooSession(redirect_to=fake.url, timeout=5.0), tz_cache_dir=tz_cache)
        yield provider, fake
    finally:
        fake.faults.clear()
        fake.stop()
        YfData.cache_get.cache_clear()


def test_30min_bars_are_resampled_from_15min_and_in_the_schema(yahoo) -> None:
    provider, fake = yahoo
    assert isinstance(provider, MarketData)
    frame = provider.get_bars(["TQQQ", "AAPL"], START, END, "30min")
    assert bar_problems(frame, symbols=["AAPL", "TQQQ"]) == []
    assert frame.groupby("symbol").size().to_dict() == {"AAPL": 26, "TQQQ": 26}
    fifteen = fake.bars[("AAPL", "15m")]
    first = frame[frame["symbol"] == "AAPL"].iloc[0]
    assert first["open"] == pytest.approx(fifteen["open"].iloc[0])
    assert first["close"] == pytest.approx(fifteen["close"].iloc[1])  # 09:45's close ends 09:30's bar
    assert first["volume"] == fifteen["volume"].iloc[0] + fifteen["volume"].iloc[1]
    chart = fake.chart_requests("AAPL")[-1]
    assert chart.query["interval"] == "15m"
    assert chart.headers["x-forwarded-host"].endswith("finance.yahoo.com")  # redirected, not real


def test_session_open_is_1430z_in_winter_and_1330z_in_summer(yahoo) -> None:
    provider, _ = yahoo
    frame = provider.get_bars(["AAPL"], START, END, "1h")
    firsts = frame.groupby(frame.index.date).apply(lambda g: g.index.min().strftime("%H:%M"))
    assert list(firsts) == ["14:30", "13:30"]
    assert str(frame.index.tz) == "UTC"


def test_window_is_half_open(yahoo) -> None:
    provider, fake = yahoo
    bars = fake.bars[("AAPL", "1h")]
    frame = provider.get_bars(["AAPL"], bars.index[1].to_pydatetime(), bars.index[4].to_pydatetime(), "1h")
    assert list(frame.index) == list(bars.index[1:4])


def test_daily_bars_are_labelled_by_session_date(yahoo) -> None:
    provider, fake = yahoo
    opens = pd.DatetimeIndex(["2024-03-08 09:30", "2024-03-11 09:30"], tz="America/New_York")
    fake.add_bars(
        "AAPL",
        "1d",
        pd.DataFrame(
            {"open": [1.0, 2.0], "high": [1.5, 2.5], "low": [0.5, 1.5], "close": [1.2, 2.2], "volume": [10, 20]},
            index=opens,
        ),
    )
    frame = provider.get_bars(["AAPL"], START, END, "1d")
    assert list(frame.index) == [pd.Timestamp("2024-03-08", tz="UTC"), pd.Timestamp("2024-03-11", tz="UTC")]
    assert list(frame["close"]) == [1.2, 2.2]


def test_unknown_symbol_is_an_error_not_empty_bars(yahoo) -> None:
    provider, _ = yahoo
    with pytest.raises(UnknownSymbolError, match="NOPE"):
        provider.get_bars(["AAPL", "NOPE"], START, END, "1h")


def test_no_bars_in_the_window_is_an_error(yahoo) -> None:
    provider, _ = yahoo
    with pytest.raises(MarketDataError, match="no 1h bars"):
        provider.get_bars(["AAPL"], datetime(2024, 3, 9, tzinfo=UTC), datetime(2024, 3, 10, tzinfo=UTC), "1h")


def test_empty_chart_result_is_an_error(yahoo) -> None:
    provider, fake = yahoo
    fake.fault_empty_result()
    with pytest.raises(MarketDataError):
        provider.get_bars(["AAPL"], START, END, "1h")


def test_rate_limit_becomes_rate_limited(yahoo) -> None:
    provider, fake = yahoo
    fake.fault_rate_limit()
    with pytest.raises(RateLimited):
        provider.get_bars(["AAPL"], START, END, "1h")


def test_an_invalid_crumb_is_refreshed_and_the_bars_still_arrive(yahoo) -> None:
    provider, fake = yahoo
    fake.fault_invalid_crumb()
    frame = provider.get_bars(["AAPL"], START, END, "1h")
    assert len(frame) == 14
    statuses = [r.path for r in fake.requests]
    assert statuses.count("/v1/test/getcrumb") >= 1
    assert len(fake.chart_requests("AAPL")) >= 2  # the 401, then the retry


@pytest.mark.parametrize("fault", ["server_error", "non_json"])
def test_server_trouble_is_a_market_data_error(yahoo, fault) -> None:
    provider, fake = yahoo
    getattr(fake, f"fault_{fault}")()
    with pytest.raises(MarketDataError):
        provider.get_bars(["AAPL"], START, END, "1h")


def test_session_only_redirects_yahoo_and_always_has_a_timeout(yahoo) -> None:
    _, fake = yahoo
    session = YahooSession(redirect_to=fake.url, timeout=3.0)
    resp = session.get("https://query1.finance.yahoo.com/v1/test/getcrumb")
    assert resp.text == fake.crumb
    assert fake.requests[-1].headers["x-forwarded-host"] == "query1.finance.yahoo.com"
    resp = session.get(fake.url + "/v1/test/getcrumb", timeout=None)
    assert "x-forwarded-host" not in fake.requests[-1].headers


def test_unsupported_interval_is_refused(yahoo) -> None:
    provider, _ = yahoo
    with pytest.raises(ValueError):
        provider.get_bars(["AAPL"], START, END, "7min")
