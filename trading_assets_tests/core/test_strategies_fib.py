"""fib_retracement: swing points, Fibonacci level, TP/SL, and when it stays out."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from trading_assets.core.indicators import fib_levels
from trading_assets.core.strategies.fib_retracement import (
    Params,
    Signal,
    evaluate,
    evaluate_bars,
    signal_history,
    signals_frame,
)

HALF = 0.5  # bars are mid +- HALF, so a trough's low is mid - 0.5 and a peak's high mid + 0.5


def up_swing(retrace_mid: float = 108.022, tail=(108.8, 109.4, 110.0)) -> np.ndarray:
    """40 mids: fall to a trough (100 @10), rise to a peak (120 @25), pull back to
    `retrace_mid` @36, then 3 rising bars so the pull-back trough is confirmed (window 3)
    on the newest bar. Swing low 99.5, swing high 120.5: the 61.8% level is
    120.5 - 0.618 * 21 = 107.522, i.e. a mid of 108.022."""
    return np.concatenate(
        [
            np.linspace(110, 100, 11),
            np.linspace(100, 120, 16)[1:],
            np.linspace(120, retrace_mid, 12)[1:],
            np.asarray(tail, dtype="float64"),
        ]
    )


def bars(mid: np.ndarray, symbol: str = "IX.D.FTSE") -> pd.DataFrame:
    index = pd.date_range("2025-02-03 08:00", periods=len(mid), freq="1h", tz="UTC")
    return pd.DataFrame(
        {"symbol": symbol, "open": mid, "high": mid + HALF, "low": mid - HALF, "close": mid,
         "volume": 1.0},
        index=index.rename("timestamp"),
    )


def run(mid: np.ndarray, params: Params | None = None):
    return evaluate_bars(bars(mid), params)


def test_buy_on_a_pull_back_trough_at_61_8():
    mid = up_swing()
    frame = bars(mid)
    s = evaluate_bars(frame)
    assert s.signal is Signal.BUY
    assert s.level == 0.618 and s.level_price == pytest.approx(107.522)
    assert (s.entry, s.take_profit, s.stop_loss) == (110.0, 120.5, 99.5)
    kinds = (s.swing_start.kind, s.swing_end.kind, s.retracement.kind)
    assert kinds == ("trough", "peak", "trough")
    assert s.swing_start.at == frame.index[10] and s.swing_start.price == 99.5
    assert s.swing_end.at == frame.index[25] and s.swing_end.price == 120.5
    assert s.retracement.at == frame.index[36]
    assert s.as_of == frame.index[-1]
    assert "61.8%" in s.reason


def test_sell_on_a_bounce_peak_at_61_8():
    s = run(220.0 - up_swing())  # the mirror image: peak 120.5 @10, trough 99.5 @25
    assert s.signal is Signal.SELL
    assert s.level == 0.618 and s.level_price == pytest.approx(99.5 + 0.618 * 21)
    assert (s.entry, s.take_profit, s.stop_loss) == (110.0, 99.5, 120.5)
    assert (s.swing_start.kind, s.swing_end.kind, s.retracement.kind) == ("peak", "trough", "peak")


@pytest.mark.parametrize(
    ("level", "retrace_low"),
    [(0.382, 120.5 - 0.382 * 21), (0.5, 110.0)],
)
def test_other_levels(level, retrace_low):
    mid = up_swing(retrace_low + HALF, tail=(retrace_low + 1.5, retrace_low + 2, retrace_low + 3))
    s = run(mid)
    assert s.signal is Signal.BUY and s.level == level


def test_depth_between_levels_gives_no_signal():
    # 70% retracement: 0.082 from 61.8% and 0.086 from 78.6% (not a default level).
    low = 120.5 - 0.70 * 21
    s = run(up_swing(low + HALF, tail=(low + 1, low + 1.5, low + 2)))
    assert s.signal is Signal.NONE and "not within" in s.reason
    assert s.depth == pytest.approx(0.70)


def test_tolerance_widens_what_counts_as_a_level():
    low = 120.5 - 0.66 * 21
    mid = up_swing(low + HALF, tail=(low + 1, low + 1.5, low + 2))
    assert run(mid).signal is Signal.NONE
    assert run(mid, Params(tolerance=0.05)).signal is Signal.BUY


def test_full_retracement_is_not_a_setup():
    # The pull-back goes below the swing low: a lower low, not a retracement.
    s = run(up_swing(98.0, tail=(99.0, 100.0, 101.0)))
    assert s.signal is Signal.NONE


def test_signal_fires_once_then_goes_stale():
    mid = np.append(up_swing(), 110.5)  # one more bar: confirmation is now a bar old
    assert run(mid).signal is Signal.NONE
    assert "stale" in run(mid).reason
    assert run(mid, Params(fresh_bars=2)).signal is Signal.BUY


def test_no_signal_before_the_trough_is_confirmed():
    assert run(up_swing(tail=(108.8, 109.4)), Params(lookback=39)).signal is Signal.NONE


def test_no_signal_once_price_is_past_the_take_profit():
    s = run(up_swing(tail=(108.8, 109.4, 121.0)))
    assert s.signal is Signal.NONE and "take-profit" in s.reason


def test_too_few_bars():
    s = run(up_swing()[5:])
    assert s.signal is Signal.NONE and "need the last 40" in s.reason


def test_only_the_last_lookback_bars_count():
    # A deep history before the last 40 bars changes nothing.
    mid = np.concatenate([np.linspace(50, 200, 30), up_swing()])
    assert run(mid).signal is Signal.BUY


def test_plain_arrays_work_and_positions_stand_in_for_times():
    mid = up_swing()
    s = evaluate(mid + HALF, mid - HALF, mid)
    assert s.signal is Signal.BUY and s.retracement.at == 36


def test_signals_frame_one_row_per_symbol():
    frame = pd.concat([bars(up_swing(), "AAA"), bars(220.0 - up_swing(), "BBB"),
                       bars(np.linspace(100, 110, 40), "CCC")])
    out = signals_frame(frame)
    assert out["signal"].to_dict() == {"AAA": "buy", "BBB": "sell", "CCC": "none"}
    assert out.loc["AAA", "take_profit"] == 120.5 and out.loc["BBB", "stop_loss"] == 120.5
    assert out.loc["AAA", "swing_end_at"] == frame.index[25]


@pytest.mark.parametrize(
    "kw",
    [{"lookback": 8, "window": 3}, {"levels": (0.5, 1.2)}, {"take_profit_ratio": 0.3},
     {"stop_loss_ratio": 0.5}, {"fresh_bars": 0}],
)
def test_bad_params_raise(kw):
    with pytest.raises(ValueError):
        Params(**kw)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=1.0, max_value=1e5),
    st.floats(min_value=0.0, max_value=1e4),
    st.sampled_from(["up", "down"]),
)
def test_fib_levels_are_ordered_and_within_the_swing(low, height, trend):
    high = low + height
    levels = fib_levels(low, high, trend)
    ratios = sorted(levels)
    prices = [levels[r] for r in ratios]
    eps = 1e-9 * high
    assert all(low - eps <= p <= high + eps for p in prices)
    step = 1 if trend == "down" else -1  # down: prices rise with the ratio; up: they fall
    assert all(step * (b - a) >= -eps for a, b in itertools.pairwise(prices))
    assert levels[0.0] == pytest.approx(high if trend == "up" else low)
    assert levels[1.0] == pytest.approx(low if trend == "up" else high)


def zigzag(start: float, rise: float, depth: float, legs: tuple[int, int, int, int]) -> np.ndarray:
    """Fall into a trough, rise by `rise`, pull back `depth` of the swing, bounce 3 bars."""
    a, b, c, _ = legs
    low = start
    high = low + rise
    trough = high - depth * (high - low)
    return np.concatenate(
        [
            np.linspace(low + rise / 2, low, a + 1),
            np.linspace(low, high, b + 1)[1:],
            np.linspace(high, trough, c + 1)[1:],
            trough + np.array([0.2, 0.3, 0.4]) * (high - trough),
        ]
    )


@settings(max_examples=80, deadline=None)
@given(
    st.floats(min_value=20.0, max_value=500.0),
    st.floats(min_value=5.0, max_value=100.0),
    st.one_of(  # anywhere, or close to a level (where the boundary cases are)
        st.floats(min_value=0.2, max_value=0.8),
        st.sampled_from(Params().levels).flatmap(lambda lv: st.floats(lv - 0.05, lv + 0.05)),
    ),
    st.tuples(*[st.integers(min_value=4, max_value=10)] * 4),
)
def test_buy_fires_exactly_when_the_pull_back_reaches_a_level(start, rise, depth, legs):
    mid = zigzag(start, rise, depth, legs)
    assume(len(mid) <= 40)
    mid = np.concatenate([np.full(40 - len(mid), mid[0]), mid])  # pad to the lookback
    s = evaluate(mid + HALF, mid - HALF, mid)
    event(s.signal.value)
    # Swing low L = start - 0.5, high H = start + rise + 0.5, trough T at the pull-back.
    true_depth = (rise + HALF - (rise - depth * rise - HALF)) / (rise + 1.0)
    near = min(abs(true_depth - lv) for lv in Params().levels)
    if near <= Params().tolerance - 1e-9:
        assert s.signal is Signal.BUY
    elif near > Params().tolerance + 1e-9:
        assert s.signal is Signal.NONE
    if s.signal is Signal.BUY:
        assert s.stop_loss < s.retracement.price < s.entry < s.take_profit
        assert s.swing_start.price <= s.level_price <= s.swing_end.price
        assert s.swing_start.position < s.swing_end.position < s.retracement.position
        assert abs(s.depth - s.level) <= Params().tolerance


def test_history_fires_once_per_setup_and_matches_the_live_call():
    """A backtest over the history sees the signal on exactly the bar the hourly tick
    would have seen it, and only once."""
    mid = np.concatenate([up_swing(), [110.5, 111.0, 111.5]])
    frame = bars(mid)
    history = signal_history(frame)
    assert history.index.equals(frame.index)
    assert history.index[history["signal"] == "buy"].tolist() == [frame.index[39]]
    live = evaluate_bars(frame.iloc[:40]).to_record()
    assert history.loc[frame.index[39]].to_dict() == live


def test_a_later_dip_through_the_trough_cancels_the_setup():
    # With a 3-bar freshness allowance, a dip below the pull-back trough afterwards
    # means the retracement did not hold.
    held = np.concatenate([up_swing(), [110.5, 110.8]])
    assert run(held, Params(fresh_bars=3)).signal is Signal.BUY
    broken = np.concatenate([up_swing(), [106.0, 110.8]])  # low 105.5 < trough 107.522
    s = run(broken, Params(fresh_bars=3))
    assert s.signal is Signal.NONE and "traded back" in s.reason
