"""AlpacaBars against a loopback Alpaca data API: pages, time zones, errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from trading_assets.adapters.alpaca.bars import AlpacaBars
from trading_assets.core.bars import bar_problems
from trading_assets.core.ports import MarketData, MarketDataError, RateLimited, UnknownSymbolError
from trading_assets_tests.fakes.alpaca import API_KEY, SECRET_KEY, FakeAlpacaData


def session_bars(day: str, seed: int, minutes: int = 30) -> pd.DataFrame:
    """Regular-session bars of one New York day, indexed by UTC bar start."""
    starts = pd.date_range(
        f"{day} 09:30",
        f"{day} 16:00",
        freq=f"{minutes}min",
        inclusive="left",
        tz="America/New_York",
    ).tz_convert("UTC")
    rng = np.random.default_rng(seed)
    close = 100 + rng.normal(0, 1, len(starts)).cumsum()
    return pd.DataFrame(
        {
            "open": close - 0.1,
            "high": close + 0.5,
            "low": close - 0.5,
            "close": close,
            "volume": rng.integers(1_000, 5_000, len(starts)),
        },
        index=starts,
    )


@pytest.fixture
def data() -> Iterator[tuple[AlpacaBars, FakeAlpacaData]]:
    fake = FakeAlpacaData(page_size=10)
    fake.start()
    try:
        provider = AlpacaBars(
            API_KEY,
            SECRET_KEY,
            url_override=fake.url,
            timeout=2.0,
            rate_limit_per_minute=None,
            retry_wait_seconds=0,
        )
        yield provider, fake
    finally:
        fake.stop()


def test_is_market_data(data) -> None:
    assert isinstance(data[0], MarketData)


def test_many_symbols_across_pages_come_back_whole_and_in_schema(data) -> None:
    provider, fake = data
    for i, sym in enumerate(["TQQQ", "AAPL"]):
        fake.add_bars(
            sym,
            "30Min",
            pd.concat([session_bars("2024-03-07", i), session_bars("2024-03-08", 10 + i)]),
        )
    frame = provider.get_bars(
        ["TQQQ", "AAPL"],
        datetime(2024, 3, 7, tzinfo=UTC),
        datetime(2024, 3, 9, tzinfo=UTC),
        "30min",
    )
    assert len(fake.bar_requests()) == 6  # 52 bars, 10 per page
    assert fake.bar_requests()[1].query["page_token"]
    assert bar_problems(frame, symbols=["AAPL", "TQQQ"]) == []
    assert frame.groupby("symbol").size().to_dict() == {"AAPL": 26, "TQQQ": 26}
    expected = fake.bars[("TQQQ", "30Min")]
    got = frame[frame["symbol"] == "TQQQ"]
    assert (got.index == expected.index).all()
    assert np.allclose(got["close"], expected["close"])
    assert str(frame.index.tz) == "UTC" and frame.index.name == "timestamp"


def test_requests_iex_feed_split_adjusted(data) -> None:
    provider, fake = data
    fake.add_bars("TQQQ", "1Hour", session_bars("2024-03-08", 1, minutes=60))
    provider.get_bars(
        ["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC), "1h"
    )
    q = fake.bar_requests()[0].query
    assert (q["feed"], q["adjustment"], q["timeframe"]) == ("iex", "all", "1Hour")


def test_window_is_half_open_although_alpacas_end_is_inclusive(data) -> None:
    provider, fake = data
    bars = session_bars("2024-03-08", 3)
    fake.add_bars("TQQQ", "30Min", bars)
    end = bars.index[5]
    frame = provider.get_bars(["TQQQ"], bars.index[0].to_pydatetime(), end.to_pydatetime(), "30min")
    assert len(frame) == 5 and frame.index.max() < end


def test_session_open_is_1330z_in_summer_and_1430z_in_winter(data) -> None:
    provider, fake = data
    fake.add_bars(
        "TQQQ", "30Min", pd.concat([session_bars("2024-03-08", 1), session_bars("2024-03-11", 2)])
    )
    frame = provider.get_bars(
        ["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC), "30min"
    )
    firsts = frame.groupby(frame.index.date).apply(lambda g: g.index.min().strftime("%H:%M"))
    assert list(firsts) == ["14:30", "13:30"]


def test_daily_bars_are_labelled_by_session_date_across_dst(data) -> None:
    provider, fake = data
    # Alpaca labels a day at midnight New York: 05:00Z in winter, 04:00Z in summer.
    idx = pd.DatetimeIndex(["2024-03-08T05:00:00Z", "2024-03-11T04:00:00Z"])
    fake.add_bars(
        "TQQQ",
        "1Day",
        pd.DataFrame(
            {
                "open": [1.0, 2.0],
                "high": [1.5, 2.5],
                "low": [0.5, 1.5],
                "close": [1.2, 2.2],
                "volume": [10.0, 20.0],
            },
            index=idx,
        ),
    )
    frame = provider.get_bars(
        ["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 12, tzinfo=UTC), "1d"
    )
    assert list(frame.index) == [
        pd.Timestamp("2024-03-08", tz="UTC"),
        pd.Timestamp("2024-03-11", tz="UTC"),
    ]


def test_a_symbol_without_bars_is_an_error_not_a_silent_gap(data) -> None:
    provider, fake = data
    fake.add_bars("TQQQ", "30Min", session_bars("2024-03-08", 1))
    with pytest.raises(MarketDataError, match="ZZZZ"):
        provider.get_bars(
            ["TQQQ", "ZZZZ"],
            datetime(2024, 3, 8, tzinfo=UTC),
            datetime(2024, 3, 9, tzinfo=UTC),
            "30min",
        )


def test_invalid_symbol_is_unknown_symbol(data) -> None:
    provider, _ = data
    with pytest.raises(UnknownSymbolError):
        provider.get_bars(
            ["BAD$"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC), "30min"
        )


def test_sip_feed_on_a_free_plan_explains_itself(data) -> None:
    _, fake = data
    sip = AlpacaBars(
        API_KEY, SECRET_KEY, url_override=fake.url, feed="sip", rate_limit_per_minute=None
    )
    with pytest.raises(MarketDataError, match="iex"):
        sip.get_bars(
            ["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC), "30min"
        )


def test_wrong_key_is_a_market_data_error_without_the_secret(data) -> None:
    _, fake = data
    bad = AlpacaBars(API_KEY, "wrong-secret", url_override=fake.url, rate_limit_per_minute=None)
    with pytest.raises(MarketDataError, match="401") as info:
        bad.get_bars(
            ["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC), "30min"
        )
    assert "wrong-secret" not in str(info.value)


def test_one_429_is_retried_many_are_rate_limited(data) -> None:
    provider, fake = data
    fake.add_bars("TQQQ", "30Min", session_bars("2024-03-08", 1))
    args = (["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC), "30min")
    fake.fault_rate_limit(times=1)
    assert len(provider.get_bars(*args)) == 13
    fake.fault_rate_limit(times=10)
    with pytest.raises(RateLimited):
        provider.get_bars(*args)


def test_html_error_page_is_a_market_data_error(data) -> None:
    provider, fake = data
    fake.fault_non_json()
    with pytest.raises(MarketDataError, match="502"):
        provider.get_bars(
            ["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC), "30min"
        )


def test_unsupported_interval_and_naive_times_are_refused(data) -> None:
    provider, _ = data
    with pytest.raises(ValueError):
        provider.get_bars(
            ["TQQQ"], datetime(2024, 3, 8, tzinfo=UTC), datetime(2024, 3, 9, tzinfo=UTC), "7min"
        )
    with pytest.raises(ValueError):
        provider.get_bars(["TQQQ"], datetime(2024, 3, 8), datetime(2024, 3, 9), "30min")
