"""Indicator core: TA-Lib parity on real bars, and the behaviour strategies rely on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from trading_assets.core import indicators as ind
from trading_assets.core.bars import bar_problems

DATA = Path(__file__).resolve().parents[2] / "trading_assets" / "data"
PERIODS = (2, 5, 14, 30, 100)


def _real_bars(name: str) -> pd.DataFrame:
    frame = pd.read_csv(DATA / f"{name}.csv.gz", index_col=0, parse_dates=True)
    return frame.rename(columns=str.lower)


@pytest.fixture(scope="module", params=["EURUSD_1h", "GOOG_1d"])
def real(request) -> pd.DataFrame:
    return _real_bars(request.param)


def _assert_same(ours: np.ndarray, ref: np.ndarray) -> None:
    """Same warm-up (NaN where TA-Lib has NaN) and equal to 1e-9 from the first value on."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- TA-Lib parity


@pytest.fixture(scope="module")
def talib():
    """TA-Lib is a dev dependency only: the reference, never used at run time. Imported
    (not importorskip): a failed install must fail the suite, not turn parity into skips."""
    import talib

    return talib


@pytest.mark.parametrize("period", PERIODS)
def test_averages_match_talib_on_real_closes(talib, real, period):
    close = real["close"].to_numpy()
    _assert_same(ind.ema(close, period), talib.EMA(close, period))
    _assert_same(ind.sma(close, period), talib.SMA(close, period))


@pytest.mark.parametrize("period", PERIODS)
def test_bar_ranges_match_talib_on_real_bars(talib, real, period):
    h, lo, c = (real[k].to_numpy() for k in ("high", "low", "close"))
    _assert_same(ind.true_range(h, lo, c), talib.TRANGE(h, lo, c))
    _assert_same(ind.atr(h, lo, c, period), talib.ATR(h, lo, c, period))


@pytest.mark.parametrize("period", PERIODS)
def test_dmi_matches_talib_plus_minus_di_and_adx(talib, real, period):
    h, lo, c = (real[k].to_numpy() for k in ("high", "low", "close"))
    plus, minus, adx = ind.dmi(h, lo, c, period)
    _assert_same(plus, talib.PLUS_DI(h, lo, c, period))
    _assert_same(minus, talib.MINUS_DI(h, lo, c, period))
    _assert_same(adx, talib.ADX(h, lo, c, period))


def test_leading_nans_are_skipped_like_talib(talib):
    bars = _real_bars("GOOG_1d").iloc[:300]
    h, lo, c = (bars[k].to_numpy().copy() for k in ("high", "low", "close"))
    for a in (h, lo, c):
        a[:7] = np.nan
    c[7] = np.nan  # close starts one bar later than high/low
    _assert_same(ind.ema(c, 10), talib.EMA(c, 10))
    _assert_same(ind.atr(h, lo, c, 14), talib.ATR(h, lo, c, 14))
    references = (talib.PLUS_DI, talib.MINUS_DI, talib.ADX)
    for ours, ref in zip(ind.dmi(h, lo, c, 14), references, strict=True):
        _assert_same(ours, ref(h, lo, c, 14))


def test_panel_ema_is_per_column_with_its_own_warmup(talib):
    """The EMA-concentration strategy runs ema on a timestamp x symbol panel."""
    closes = _real_bars("EURUSD_1h")["close"].to_numpy()[:400]
    panel = pd.DataFrame({"EURUSD": closes, "LATE": np.r_[np.full(50, np.nan), closes[50:] * 2]})
    out = ind.ema(panel, 20)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["EURUSD", "LATE"]
    assert out.index.equals(panel.index)
    _assert_same(out["EURUSD"], talib.EMA(panel["EURUSD"].to_numpy(), 20))
    _assert_same(out["LATE"], talib.EMA(panel["LATE"].to_numpy(), 20))
    np.testing.assert_array_equal(ind.ema(panel.to_numpy(), 20), out.to_numpy())


def test_panel_dmi_and_atr_per_symbol(talib):
    eur = _real_bars("EURUSD_1h").iloc[:300].reset_index(drop=True)
    goog = _real_bars("GOOG_1d").iloc[:300].reset_index(drop=True)
    cols = {k: pd.DataFrame({"EURUSD": eur[k], "GOOG": goog[k]}) for k in ("high", "low", "close")}
    lines = ind.dmi(cols["high"], cols["low"], cols["close"], 14)
    plus, minus, adx = lines
    assert lines.adx is adx
    atr = ind.atr(cols["high"], cols["low"], cols["close"], 14)
    for out in (plus, minus, adx, atr):
        assert isinstance(out, pd.DataFrame) and list(out.columns) == ["EURUSD", "GOOG"]
    for sym, bars in (("EURUSD", eur), ("GOOG", goog)):
        h, lo, c = (bars[k].to_numpy() for k in ("high", "low", "close"))
        _assert_same(plus[sym], talib.PLUS_DI(h, lo, c, 14))
        _assert_same(minus[sym], talib.MINUS_DI(h, lo, c, 14))
        _assert_same(adx[sym], talib.ADX(h, lo, c, 14))
        _assert_same(atr[sym], talib.ATR(h, lo, c, 14))


# ----------------------------------------------------------------------------- contracts


def test_series_in_series_out_with_index_and_name():
    idx = pd.date_range("2024-01-02", periods=6, freq="h", tz="UTC")
    close = pd.Series([1.0, 2, 3, 4, 5, 6], index=idx, name="TQQQ")
    out = ind.ema(close, 3)
    assert isinstance(out, pd.Series)
    assert out.index.equals(idx)
    assert out.name == "TQQQ"
    assert out.iloc[:2].isna().all()
    assert out.iloc[2] == pytest.approx(2.0)  # seeded with the mean of the first three
    assert out.iloc[3] == pytest.approx(3.0)  # 2 + 0.5 * (4 - 2)


def test_wilder_by_hand():
    out = ind.wilder(np.array([1.0, 2.0, 3.0, 4.0]), 2)
    np.testing.assert_allclose(out, [np.nan, 1.5, 2.25, 3.125])


def test_true_range_counts_the_gap_from_the_previous_close():
    high = np.array([10.0, 12.0, 9.0])
    low = np.array([9.0, 11.0, 8.0])
    close = np.array([9.5, 11.5, 8.5])
    # bar 1 gapped up: |12 - 9.5| = 2.5 beats high-low = 1; bar 2 gapped down: |8 - 11.5|
    np.testing.assert_allclose(ind.true_range(high, low, close), [np.nan, 2.5, 3.5])


def test_atr_is_wilder_smoothed_true_range():
    bars = _real_bars("EURUSD_1h").iloc[:500]
    h, lo, c = bars["high"], bars["low"], bars["close"]
    out = ind.atr(h, lo, c, 14)
    assert isinstance(out, pd.Series) and out.index.equals(bars.index)
    np.testing.assert_allclose(out, ind.wilder(ind.true_range(h, lo, c), 14), rtol=1e-12)


def test_too_short_input_is_all_nan():
    assert np.isnan(ind.ema(np.array([1.0, 2.0]), 3)).all()
    assert np.isnan(ind.sma(np.array([]), 3)).all()
    plus, _, adx = ind.dmi(np.ones(5) + 1, np.ones(5), np.ones(5), 3)
    assert np.isnan(adx).all()
    assert not np.isnan(plus[3:]).any() and np.isnan(plus[:3]).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda x: ind.ema(x, 3),
        lambda x: ind.sma(x, 3),
        lambda x: ind.wilder(x, 3),
        lambda x: ind.atr(x + 1, x - 1, x, 3),
        lambda x: ind.dmi(x + 1, x - 1, x, 3),
        lambda x: ind.true_range(x + 1, x - 1, x),
    ],
)
def test_a_gap_after_the_start_raises(call):
    x = np.array([np.nan, 1.0, 2.0, 3.0, np.nan, 5.0, 6.0, 7.0, 8.0, 9.0])
    with pytest.raises(ValueError, match="only leading NaNs"):
        call(x)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(40, 5000),
    data=st.data(),
    bad=st.sampled_from([np.nan, np.inf]),
)
def test_a_gap_anywhere_in_a_long_series_raises(n, data, bad):
    x = 100.0 + np.sin(np.arange(n))
    first = data.draw(st.integers(0, 10), label="leading NaNs")
    x[:first] = np.nan
    x[data.draw(st.integers(first + 1, n - 1), label="gap at")] = bad
    for call in (
        lambda: ind.ema(x, 5),
        lambda: ind.sma(x, 5),
        lambda: ind.wilder(x, 5),
        lambda: ind.atr(x + 1, x - 1, x, 5),
        lambda: ind.dmi(x + 1, x - 1, x, 5),
        lambda: ind.true_range(x + 1, x - 1, x),
    ):
        with pytest.raises(ValueError, match="only leading NaNs"):
            call()


def test_gap_in_one_panel_column_names_the_column():
    gappy = np.r_[np.arange(5.0), np.nan, np.arange(4.0)]
    panel = pd.DataFrame({"TQQQ": np.arange(10.0), "SQQQ": gappy})
    with pytest.raises(ValueError, match="'SQQQ'"):
        ind.ema(panel, 3)


def test_nullable_pandas_input_treats_na_as_leading_nan():
    x = pd.Series([None, 1.0, 2.0, 3.0, 4.0], dtype="Float64")
    np.testing.assert_allclose(ind.sma(x, 2), [np.nan, np.nan, 1.5, 2.5, 3.5])


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float64, st.integers(1, 3000), elements=st.floats(-1e4, 1e4)),
    period=st.integers(1, 50),
)
def test_sma_is_the_rolling_mean(x, period):
    expected = pd.Series(x).rolling(period).mean().to_numpy()
    np.testing.assert_allclose(ind.sma(x, period), expected, rtol=1e-9, atol=1e-8)


def test_bad_periods_are_refused():
    with pytest.raises(ValueError):
        ind.ema(np.ones(5), 0)
    with pytest.raises(ValueError):
        ind.sma(np.ones(5), 2.5)
    with pytest.raises(ValueError):
        ind.dmi(np.ones(5), np.ones(5), np.ones(5), 1)
    with pytest.raises(ValueError, match="shape"):
        ind.atr(np.ones(5), np.ones(4), np.ones(5), 2)


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float64, st.integers(1, 60), elements=st.floats(1.0, 1000.0)),
    period=st.integers(1, 20),
)
def test_ema_stays_within_the_range_it_has_seen(x, period):
    out = ind.ema(x, period)
    running_min = np.minimum.accumulate(x)
    running_max = np.maximum.accumulate(x)
    ok = ~np.isnan(out)
    assert ok.sum() == max(0, len(x) - period + 1)
    assert (out[ok] >= running_min[ok] * (1 - 1e-12)).all()
    assert (out[ok] <= running_max[ok] * (1 + 1e-12)).all()


# ----------------------------------------------------------------------------- swings


def test_peaks_and_troughs_by_hand():
    x = np.array([1, 3, 2, 5, 4, 4, 6, 1, 2, 0.5, 3])
    peaks, troughs = ind.peaks_troughs(x, x, 1)
    assert np.flatnonzero(peaks).tolist() == [1, 3, 6, 8]
    # bars 4 and 5 tie at 4: neither beats the other, so neither is a trough
    assert np.flatnonzero(troughs).tolist() == [2, 7, 9]


def test_swing_points_need_a_full_window_on_both_sides():
    high = np.array([10.0, 1, 2, 3, 2, 1, 9])
    low = high - 0.5
    peaks, troughs = ind.peaks_troughs(high, low, 2)
    assert np.flatnonzero(peaks).tolist() == [3]  # 10 and 9 sit on the edges: unconfirmed
    assert not troughs.any()  # 0.5 at bar 1 has only one bar on its left


def test_a_flat_top_is_not_a_peak():
    x = np.array([1.0, 2, 5, 5, 2, 1])
    peaks, _ = ind.peaks_troughs(x, x, 2)
    assert not peaks.any()


def test_nan_in_the_window_blocks_a_swing_point():
    x = np.array([1.0, 2, 5, np.nan, 1, 0])
    peaks, _ = ind.peaks_troughs(x, x, 1)
    assert not peaks[2]
    peaks, _ = ind.peaks_troughs(np.array([1.0, 5, 1]), np.array([1.0, 5, 1]), 1)
    assert peaks.tolist() == [False, True, False]


def test_peaks_troughs_keep_a_series_index():
    idx = pd.date_range("2024-01-02", periods=5, freq="h", tz="UTC")
    high = pd.Series([1.0, 2, 3, 2, 1], index=idx)
    peaks, troughs = ind.peaks_troughs(high, high - 1, 2)
    assert peaks.index.equals(idx) and troughs.index.equals(idx)
    assert peaks.tolist() == [False, False, True, False, False]


def _brute_force_peaks(x: np.ndarray, window: int) -> np.ndarray:
    """The definition, literally: beats every other bar within the window on each side."""
    out = np.zeros(len(x), dtype=bool)
    for i in range(window, len(x) - window):
        others = np.r_[x[i - window : i], x[i + 1 : i + window + 1]]
        out[i] = bool((x[i] > others).all())
    return out


@settings(max_examples=150, deadline=None)
@given(
    x=arrays(np.float64, st.integers(0, 80), elements=st.integers(0, 6).map(float)),
    window=st.integers(1, 6),
)
def test_peaks_troughs_match_the_definition_including_ties(x, window):
    peaks, troughs = ind.peaks_troughs(x, x, window)
    np.testing.assert_array_equal(peaks, _brute_force_peaks(x, window))
    np.testing.assert_array_equal(troughs, _brute_force_peaks(-x, window))


def test_fib_levels_of_an_up_swing_retrace_down_from_the_high():
    levels = ind.fib_levels(100.0, 200.0)
    assert list(levels) == [0.0, 0.236, 0.382, 0.5, 0.618, 0.786, 1.0]
    assert levels[0.0] == 200.0 and levels[1.0] == 100.0
    assert levels[0.5] == pytest.approx(150.0)
    assert levels[0.382] == pytest.approx(161.8)
    prices = list(levels.values())
    assert prices == sorted(prices, reverse=True)


def test_fib_levels_of_a_down_swing_retrace_up_from_the_low():
    levels = ind.fib_levels(100.0, 200.0, trend="down")
    assert levels[0.0] == 100.0 and levels[1.0] == 200.0
    assert levels[0.618] == pytest.approx(161.8)
    prices = list(levels.values())
    assert prices == sorted(prices)


def test_fib_levels_vectorised_and_validated():
    levels = ind.fib_levels(np.array([1.0, 10.0]), np.array([2.0, 20.0]))
    np.testing.assert_allclose(levels[0.5], [1.5, 15.0])
    with pytest.raises(ValueError):
        ind.fib_levels(2.0, 1.0)


# ----------------------------------------------------------------------------- ticks


def _ticks(pairs: list[tuple[str, float]], tz: str = "UTC") -> pd.Series:
    idx = pd.DatetimeIndex([pd.Timestamp(f"2024-03-01 {t}", tz=tz) for t, _ in pairs])
    return pd.Series([p for _, p in pairs], index=idx, dtype="float64")


def test_pct_change_over_compares_with_the_price_current_a_minute_ago():
    s = _ticks([("09:30:00", 100.0), ("09:30:30", 101.0), ("09:31:00", 102.0), ("09:31:40", 99.0)])
    out = ind.pct_change_over(s, None, 60)
    assert out.index.equals(s.index)
    assert out.iloc[:2].isna().all()  # nothing a minute old yet
    assert out.iloc[2] == pytest.approx(0.02)  # exactly 60 s old counts: 102 vs 100
    assert out.iloc[3] == pytest.approx(99 / 101 - 1)  # as of 09:30:40 the price was 101
    assert (out.abs() >= 0.02).tolist() == [False, False, True, False]


def test_pct_change_over_with_sparse_ticks_and_plain_seconds():
    out = ind.pct_change_over(np.array([100.0, 103.0]), np.array([0.0, 600.0]), 60)
    assert np.isnan(out[0]) and out[1] == pytest.approx(0.03)
    with pytest.raises(ValueError, match="non-decreasing"):
        ind.pct_change_over(np.array([1.0, 2.0]), np.array([5.0, 1.0]), 60)


def test_resample_last_takes_the_last_tick_of_each_minute():
    s = _ticks([("09:30:05", 100.0), ("09:30:50", 101.0), ("09:31:10", 102.0), ("09:31:59", 103.0)])
    out = ind.resample_last(s, "1min")
    assert out.index.tolist() == [
        pd.Timestamp("2024-03-01 09:30", tz="UTC"),
        pd.Timestamp("2024-03-01 09:31", tz="UTC"),
    ]
    assert out.tolist() == [101.0, 103.0]


def test_resample_last_empty_minutes():
    s = _ticks([("09:30:05", 100.0), ("09:32:10", 102.0)])
    assert ind.resample_last(s, "1min").tolist() == [100.0, 100.0, 102.0]
    assert np.isnan(ind.resample_last(s, "1min", empty="nan").iloc[1])
    assert len(ind.resample_last(s, "1min", empty="drop")) == 2


def test_resample_to_ten_seconds_on_an_epoch_grid_in_utc():
    s = _ticks([("04:30:07", 1.0), ("04:30:13", 2.0), ("04:30:19", 3.0)], tz="America/New_York")
    out = ind.resample_last(s, "10s")
    assert out.index[0] == pd.Timestamp("2024-03-01 09:30:00", tz="UTC")
    assert str(out.index.tz) == "UTC"
    assert out.tolist() == [1.0, 3.0]


def test_resample_ohlc_with_sizes_and_an_empty_interval():
    s = _ticks([("09:30:05", 100.0), ("09:30:20", 104.0), ("09:30:40", 99.0), ("09:32:00", 101.0)])
    size = pd.Series([1.0, 2.0, 3.0, 4.0], index=s.index)
    bars = ind.resample_ohlc(s, "1min", volume=size)
    assert bars.loc[pd.Timestamp("2024-03-01 09:30", tz="UTC")].tolist() == [100, 104, 99, 99, 6]
    # no ticks in 09:31: a flat bar at the previous close with no volume
    assert bars.loc[pd.Timestamp("2024-03-01 09:31", tz="UTC")].tolist() == [99, 99, 99, 99, 0]
    assert bars["volume"].iloc[-1] == 4
    tick_count = ind.resample_ohlc(s, "1min", empty="drop")["volume"]
    assert tick_count.tolist() == [3, 1]


def test_ticks_to_bars_gives_valid_bar_frames():
    idx = pd.DatetimeIndex(
        [pd.Timestamp(f"2024-03-01 09:{m}", tz="UTC") for m in ("30:01", "30:02", "32:30", "30:50")]
    )
    ticks = pd.DataFrame(
        {"symbol": ["B", "A", "B", "A"], "price": [10.0, 5.0, 11.0, 6.0]}, index=idx
    )
    bars = ind.ticks_to_bars(ticks, "1min")
    assert bar_problems(bars) == []
    assert bars["symbol"].tolist() == ["A", "B", "B", "B"]
    assert bars.loc[bars["symbol"] == "A", "close"].tolist() == [6.0]


# ----------------------------------------------------------------------------- features


def test_lagged_and_tail_returns_by_hand():
    x = pd.Series([100.0, 110.0, 99.0, 99.0])
    lags = ind.lagged_returns(x, 2)
    assert list(lags.columns) == ["ret_lag1", "ret_lag2"]
    np.testing.assert_allclose(lags.iloc[3], [0.0, -0.1])
    np.testing.assert_allclose(lags.iloc[2], [-0.1, 0.1])
    assert lags.iloc[1].isna().tolist() == [False, True]
    tails = ind.tail_returns(x, [1, 2, 3])
    assert list(tails.columns) == ["ret_1", "ret_2", "ret_3"]
    np.testing.assert_allclose(tails.iloc[3], [0.0, -0.1, -0.01])
    target = ind.forward_return(x, 2)
    np.testing.assert_allclose(target.iloc[:2], [-0.01, -0.1])
    assert target.iloc[2:].isna().all()


@settings(max_examples=40, deadline=None)
@given(
    x=arrays(np.float64, 30, elements=st.floats(1.0, 100.0)),
    future=arrays(np.float64, 10, elements=st.floats(1.0, 100.0)),
    t=st.integers(0, 19),
)
def test_features_at_t_never_see_the_future(x, future, t):
    changed = x.copy()
    changed[t + 1 : t + 11] = future[: len(changed[t + 1 : t + 11])]
    for features in (lambda v: ind.lagged_returns(v, 5), lambda v: ind.tail_returns(v, [1, 3, 7])):
        np.testing.assert_array_equal(features(x)[t], features(changed)[t])
