"""Replay market data: deterministic, calendar-aware, same schema as every provider."""

import pandas as pd
import pytest

from trading_assets.adapters.market_data.replay import ReplayMarketData
from trading_assets.core.bars import BAR_COLUMNS, bar_problems
from trading_assets.core.ports import MarketData, MarketDataError, UnknownSymbolError

UTC = "UTC"


@pytest.fixture(scope="module")
def replay():
    return ReplayMarketData()


def test_schema_and_protocol(replay):
    assert isinstance(replay, MarketData)
    bars = replay.get_bars(["TQQQ", "AAPL"], pd.Timestamp("2025-11-24", tz=UTC), pd.Timestamp("2025-11-26", tz=UTC))
    assert tuple(bars.columns) == BAR_COLUMNS
    assert str(bars.index.tz) == "UTC" and bars.index.name == "timestamp"
    assert bar_problems(bars, ["TQQQ", "AAPL"]) == []
    assert bars.groupby("symbol").size().to_dict() == {"AAPL": 26, "TQQQ": 26}


def test_a_bar_is_the_same_whichever_window_asks(replay):
    wide = replay.get_bars(["TQQQ"], pd.Timestamp("2025-11-01", tz=UTC), pd.Timestamp("2025-12-01", tz=UTC))
    narrow = replay.get_bars(["TQQQ", "SPY"], pd.Timestamp("2025-11-26 15:00", tz=UTC),
                             pd.Timestamp("2025-11-26 16:00", tz=UTC))
    narrow = narrow[narrow["symbol"] == "TQQQ"]
    pd.testing.assert_frame_equal(narrow, wide.loc[narrow.index])


def test_symbols_differ_and_bars_are_continuous_within_a_session(replay):
    bars = replay.get_bars(["TQQQ", "SPY"], pd.Timestamp("2025-11-26", tz=UTC), pd.Timestamp("2025-11-27", tz=UTC))
    tqqq, spy = (bars[bars.symbol == s] for s in ("TQQQ", "SPY"))
    assert not (tqqq["close"].to_numpy() == spy["close"].to_numpy()).all()
    assert (tqqq["open"].to_numpy()[1:] == tqqq["close"].to_numpy()[:-1]).all()


def test_only_session_bars_holiday_and_half_day(replay):
    bars = replay.get_bars(["SPY"], pd.Timestamp("2025-11-27", tz=UTC), pd.Timestamp("2025-11-29", tz=UTC))
    local = bars.index.tz_convert("America/New_York")
    assert {str(d) for d in local.date} == {"2025-11-28"}
    assert local.max().strftime("%H:%M") == "12:30"


def test_hourly_interval_is_anchored_at_the_open(replay):
    bars = replay.get_bars(["SPY"], pd.Timestamp("2025-11-26", tz=UTC), pd.Timestamp("2025-11-27", tz=UTC), "1h")
    assert [t.strftime("%H:%M") for t in bars.index.tz_convert("America/New_York")] == [
        "09:30", "10:30", "11:30", "12:30", "13:30", "14:30", "15:30"]


def test_unknown_and_malformed_symbols_are_clear_errors(replay):
    with pytest.raises(UnknownSymbolError, match=r"unknown symbols \['ZZZZ'\]"):
        replay.get_bars(["TQQQ", "ZZZZ"], pd.Timestamp("2025-11-26", tz=UTC), pd.Timestamp("2025-11-27", tz=UTC))
    with pytest.raises(UnknownSymbolError, match="not valid ticker"):
        replay.get_bars(["tq qq"], pd.Timestamp("2025-11-26", tz=UTC), pd.Timestamp("2025-11-27", tz=UTC))
    with pytest.raises(MarketDataError, match="intervals"):
        replay.get_bars(["SPY"], pd.Timestamp("2025-11-26", tz=UTC), pd.Timestamp("2025-11-27", tz=UTC), "1d")


def test_many_symbols_in_one_frame():
    replay = ReplayMarketData(allow_any_symbol=True)
    symbols = [f"S{i:04d}" for i in range(500)]
    bars = replay.get_bars(symbols, pd.Timestamp("2025-11-17", tz=UTC), pd.Timestamp("2025-11-22", tz=UTC))
    assert bars["symbol"].nunique() == 500 and len(bars) == 500 * 65
    assert bar_problems(bars, symbols) == []
