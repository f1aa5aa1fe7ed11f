"""Replay market data: deterministic, calendar-aware, same schema as every provider."""

import numpy as np
import pandas as pd
import pytest

from trading_assets.adapters.replay.market_data import ReplayMarketData
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


# ----------------------------------------------------------------------------- minute bars

WEEK = (pd.Timestamp("2025-11-24", tz=UTC), pd.Timestamp("2025-11-29", tz=UTC))  # incl. a half day


def _by_half_hour(minutes: pd.DataFrame) -> pd.DataFrame:
    g = minutes.groupby(["symbol", minutes.index.floor("30min")])
    return pd.DataFrame({"open": g["open"].first(), "close": g["close"].last(),
                         "volume": g["volume"].sum(), "n": g.size()})


def test_minute_bars_aggregate_to_the_half_hour_open_close_and_volume_exactly(replay):
    symbols = ["SPY", "TQQQ", "AAPL"]
    minutes = replay.get_bars(symbols, *WEEK, "1min")
    half = replay.get_bars(symbols, *WEEK, "30min")
    assert tuple(minutes.columns) == BAR_COLUMNS and bar_problems(minutes, symbols) == []
    agg = _by_half_hour(minutes)
    want = half.set_index("symbol", append=True).swaplevel().sort_index()
    assert len(agg) == len(want) and (agg["n"] == 30).all()
    agg = agg.loc[want.index]
    # bit for bit, not approximately
    assert (agg["open"].to_numpy() == want["open"].to_numpy()).all()
    assert (agg["close"].to_numpy() == want["close"].to_numpy()).all()
    assert (agg["volume"].to_numpy() == want["volume"].to_numpy()).all()
    # within a session each minute opens at the previous minute's close
    spy = minutes[minutes["symbol"] == "SPY"]
    same_day = spy.index[1:] - spy.index[:-1] == pd.Timedelta(minutes=1)
    assert (spy["open"].to_numpy()[1:][same_day] == spy["close"].to_numpy()[:-1][same_day]).all()


def test_minute_bars_high_low_are_sensible(replay):
    minutes = replay.get_bars(["SPY", "TQQQ"], *WEEK, "1min")
    body_hi = minutes[["open", "close"]].max(axis=1)
    body_lo = minutes[["open", "close"]].min(axis=1)
    assert (minutes["high"] >= body_hi).all() and (minutes["low"] <= body_lo).all()
    assert (minutes["low"] > 0).all() and (minutes["volume"] >= 0).all()
    assert (minutes["volume"] == minutes["volume"].round()).all()
    # a minute moves about sqrt(30) times less than half an hour, and wicks are small
    for symbol in ("SPY", "TQQQ"):
        one = minutes[minutes["symbol"] == symbol]
        half = replay.get_bars([symbol], *WEEK, "30min")
        ratio = (np.log(half["close"]).diff().std() / np.log(one["close"]).diff().std())
        assert 3 < ratio < 10
        assert ((one["high"] - one["low"]) / one["close"]).max() < 0.05


def test_minute_bars_are_the_same_whichever_window_asks(replay):
    wide = replay.get_bars(["SPY"], *WEEK, "1min")
    # a window that starts and ends mid-half-hour, with another symbol alongside
    narrow = replay.get_bars(["AAPL", "SPY"], pd.Timestamp("2025-11-26 15:07", tz=UTC),
                             pd.Timestamp("2025-11-26 15:44", tz=UTC), "1min")
    narrow = narrow[narrow["symbol"] == "SPY"]
    assert len(narrow) == 37
    pd.testing.assert_frame_equal(narrow, wide.loc[narrow.index], check_exact=True)
    again = ReplayMarketData().get_bars(["SPY"], *WEEK, "1min")
    pd.testing.assert_frame_equal(again, wide, check_exact=True)


def test_minute_bars_are_session_only(replay):
    minutes = replay.get_bars(["SPY"], pd.Timestamp("2025-11-26", tz=UTC),
                              pd.Timestamp("2025-11-29", tz=UTC), "1min")
    local = minutes.index.tz_convert("America/New_York")
    per_day = pd.Series(1, index=local).groupby(local.date).size()
    assert {str(d): n for d, n in per_day.items()} == {"2025-11-26": 390, "2025-11-28": 210}
    assert local.min().strftime("%H:%M") == "09:30"
    assert local[local.date == local.max().date()].max().strftime("%H:%M") == "12:59"
    assert {t.strftime("%H:%M") for t in local[local.date == local.min().date()][[0, -1]]} == {
        "09:30", "15:59"}


def test_five_and_fifteen_minute_bars_aggregate_the_minutes(replay):
    minutes = replay.get_bars(["TQQQ"], *WEEK, "1min")
    for interval in ("5min", "15min"):
        bars = replay.get_bars(["TQQQ"], *WEEK, interval)
        g = minutes.groupby(minutes.index.floor(interval))
        want = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                             "close": g["close"].last(), "volume": g["volume"].sum()})
        assert len(bars) == len(want) == len(minutes) // int(interval.removesuffix("min"))
        pd.testing.assert_frame_equal(bars.drop(columns="symbol"), want.rename_axis("timestamp"),
                                      check_exact=True, check_freq=False)


def test_fx_replay_serves_ig_epics_hourly_through_the_fx_week_like_real_eurusd():
    from trading_assets.adapters.replay.market_data import FX_LEVELS, _tape
    from trading_assets.core import fx_hours

    fx = ReplayMarketData(session="fx")
    epics = ["CS.D.EURUSD.MINI.IP", "CS.D.USDJPY.MINI.IP"]
    start, end = pd.Timestamp("2025-10-01", tz="UTC"), pd.Timestamp("2025-12-01", tz="UTC")
    bars = fx.get_bars(epics, start, end, "1h")
    eur = bars[bars["symbol"] == epics[0]]
    # exactly the FX hours: every bar start is open, every open hour has a bar
    local = eur.index.tz_convert(fx_hours.TZ).tz_localize(None)
    assert all(fx_hours.closed_reason(t.to_pydatetime()) is None for t in local)
    hours = pd.date_range(start, end, freq="1h", inclusive="left").tz_convert(fx_hours.TZ).tz_localize(None)
    assert len(eur) == sum(fx_hours.closed_reason(t.to_pydatetime()) is None for t in hours)
    # like real EURUSD: around the pair's level, hour-to-hour moves at the tape's real volatility
    assert abs(eur["close"].median() / FX_LEVELS["EURUSD"] - 1) < 0.1
    assert 100 < bars[bars["symbol"] == epics[1]]["close"].median() < 200
    step = eur.index.to_series().diff() == pd.Timedelta(hours=1)
    ratio = np.log(eur["close"]).diff()[step].std() / _tape()["hourly_vol"]
    assert 0.6 < ratio < 1.6
    # the same bars whoever asks, and a narrower window is a slice of a wider one
    again = ReplayMarketData(session="fx").get_bars(epics[:1], pd.Timestamp("2025-11-10", tz="UTC"),
                                                     pd.Timestamp("2025-11-11", tz="UTC"), "1h")
    pd.testing.assert_frame_equal(again, eur.loc[again.index])
    with pytest.raises(UnknownSymbolError, match="not IG epics"):
        fx.get_bars(["EURUSD"], start, end, "1h")
    with pytest.raises(MarketDataError, match="hourly"):
        fx.get_bars(epics, start, end, "30min")
