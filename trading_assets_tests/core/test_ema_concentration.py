"""Seed 002 rules as a truth table, sizing, and the hourly resample."""

import math

import numpy as np
import pandas as pd
import pytest

from trading_assets.core.ports import Side
from trading_assets.core.strategies.ema_concentration import (
    Params,
    Signal,
    classify,
    hourly_closes,
    indicator_frame,
    plan,
)


@pytest.mark.parametrize(
    ("price", "fast", "slow", "expected"),
    [
        (103, 102, 101, Signal.BULLISH),  # price > EMA10 > EMA20
        (100, 102, 101, Signal.BEARISH),  # price < EMA10
        (103, 101, 102, Signal.BEARISH),  # EMA10 < EMA20
        (100, 101, 102, Signal.BEARISH),  # both bearish conditions
        (102, 102, 101, Signal.NEUTRAL),  # price == EMA10: neither rule fires
        (103, 102, 102, Signal.NEUTRAL),  # EMA10 == EMA20
        (math.nan, 102, 101, Signal.NO_DATA),
        (103, 102, math.nan, Signal.NO_DATA),
    ],
)
def test_signal_truth_table(price, fast, slow, expected):
    assert classify(price, fast, slow) is expected


def test_classify_is_vectorised_over_symbols():
    out = classify(np.array([103.0, 100.0, 102.0]), np.array([102.0, 102.0, 102.0]), np.array([101.0, 101.0, 101.0]))
    assert list(out) == ["bullish", "bearish", "neutral"]


PARAMS = Params(target="TQQQ", buying_power_fraction=0.95)
PRICES = {"TQQQ": 50.0, "AAPL": 200.0, "MSFT": 400.0}


def test_bullish_sells_everything_else_then_buys_target_with_95pct_including_proceeds():
    d = plan(Signal.BULLISH, PARAMS, {"AAPL": 10, "MSFT": 5}, PRICES, buying_power=1_000.0)
    sells = [(o.symbol, o.side, o.qty) for o in d.orders if o.leg == "exit"]
    assert sells == [("AAPL", Side.SELL, 10), ("MSFT", Side.SELL, 5)]
    buy = d.orders[-1]
    # 0.95 * (1000 + 10*200 + 5*400) / 50 = 95 shares
    assert (buy.symbol, buy.side, buy.qty, buy.leg) == ("TQQQ", Side.BUY, 95.0, "entry")
    assert d.orders.index(buy) == len(d.orders) - 1, "sells must come before the buy"


def test_bullish_with_target_already_held_only_sells_the_rest():
    d = plan(Signal.BULLISH, PARAMS, {"TQQQ": 100, "AAPL": 1}, PRICES, buying_power=5_000.0)
    assert [(o.symbol, o.side) for o in d.orders] == [("AAPL", Side.SELL)]
    assert any("already held" in n for n in d.notes)


def test_bullish_covers_shorts_in_other_symbols():
    d = plan(Signal.BULLISH, PARAMS, {"AAPL": -3}, PRICES, buying_power=10_000.0)
    assert (d.orders[0].symbol, d.orders[0].side, d.orders[0].qty, d.orders[0].leg) == ("AAPL", Side.BUY, 3, "cover")
    # budget: 0.95 * (10000 - 600) / 50 = 178.6 -> 178
    assert d.orders[-1].qty == 178


def test_zero_buying_power_places_nothing_and_says_why():
    d = plan(Signal.BULLISH, PARAMS, {}, PRICES, buying_power=0.0)
    assert d.orders == []
    assert "insufficient buying power" in d.notes[0]


def test_buying_power_below_one_share_places_nothing():
    d = plan(Signal.BULLISH, PARAMS, {}, PRICES, buying_power=52.0)  # 0.95*52 = 49.4 < 50
    assert d.orders == []


def test_bearish_sells_only_the_target():
    d = plan(Signal.BEARISH, PARAMS, {"TQQQ": 7, "AAPL": 2}, PRICES, buying_power=0.0)
    assert [(o.symbol, o.side, o.qty) for o in d.orders] == [("TQQQ", Side.SELL, 7)]
    assert plan(Signal.BEARISH, PARAMS, {"AAPL": 2}, PRICES, 0.0).orders == []


@pytest.mark.parametrize("signal", [Signal.NEUTRAL, Signal.NO_DATA])
def test_neutral_and_no_data_do_nothing(signal):
    assert plan(signal, PARAMS, {"TQQQ": 7, "AAPL": 2}, PRICES, buying_power=1e6).orders == []


def test_missing_price_for_a_held_symbol_is_a_clear_error():
    with pytest.raises(ValueError, match="no usable price for IBM"):
        plan(Signal.BULLISH, PARAMS, {"IBM": 1}, PRICES, buying_power=1_000.0)


def test_params_validate():
    with pytest.raises(ValueError):
        Params(fast=20, slow=10)
    with pytest.raises(ValueError):
        Params(buying_power_fraction=1.5)


def _bars(closes: list[float], start="2025-11-25 14:30") -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(closes), freq="30min", tz="UTC", name="timestamp")
    c = np.array(closes, dtype=float)
    return pd.DataFrame({"symbol": "TQQQ", "open": c, "high": c, "low": c, "close": c, "volume": 1.0}, index=idx)


def test_hourly_closes_are_anchored_at_the_0930_open():
    hourly = hourly_closes(_bars([1, 2, 3, 4, 5]))  # 09:30, 10:00, 10:30, 11:00, 11:30 New York
    assert list(hourly["TQQQ"]) == [2, 4, 5]  # 09:30-10:30 closes at 2, 10:30-11:30 at 4, partial 11:30 at 5
    assert [t.tz_convert("America/New_York").strftime("%H:%M") for t in hourly.index] == ["09:30", "10:30", "11:30"]


def test_indicator_frame_matches_a_hand_computed_ema():
    closes = [float(x) for x in range(1, 61)]  # 30 hourly bars, one per two 30-min bars
    frame = indicator_frame(_bars(closes, start="2025-11-10 14:30"), Params(fast=3, slow=5))
    hourly = [float(x) for x in range(2, 61, 2)]
    ema3 = np.mean(hourly[:3])
    for x in hourly[3:]:
        ema3 += 0.5 * (x - ema3)
    assert frame.loc["TQQQ", "ema_fast"] == pytest.approx(ema3)
    assert frame.loc["TQQQ", "price"] == 60.0
