"""Technical indicators over numpy arrays / pandas objects, float64, NaN during warm-up.

Definitions follow TA-Lib, so a backtest here and a chart elsewhere agree:

- `sma`: mean of the last `period` values.
- `ema`: seeded with the SMA of the first `period` values, then alpha = 2 / (period + 1).
- `wilder`: Wilder's smoothing (RMA), SMA seed then y = (y*(period-1) + x) / period.
- `true_range`, `atr`, `dmi` (+DI, -DI, ADX): TA-Lib TRANGE, ATR, PLUS_DI, MINUS_DI, ADX.

Inputs may be 1-D (array or Series) or, for the bar-indicators, 2-D panels (array or
DataFrame, one column per symbol, computed down axis 0); the output has the input's kind,
index and columns. Leading NaNs are skipped per column (a symbol that starts trading
later simply warms up later). A NaN or inf *after* the first valid value raises
ValueError: a gap inside a series has no single right answer, so the caller fills it
explicitly (e.g. `ffill`) rather than getting silently shifted numbers.

Implementation: compiled numba kernels (`_kernels`) for every recursive indicator. They
beat TA-Lib where it matters (EMA ~0.5x its time, the fused one-pass DMI ~0.3x its three
calls, ATR/TRANGE on par, all memory-bound; see benchmarks/bench_indicators.py), and
TA-Lib is a C library we keep out of the runtime: it is only the reference in the tests
and benchmarks. Numba caches the compiled code on disk, so a process pays a one-off load
on its first call rather than a compile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

from trading_assets.core import _kernels
from trading_assets.core.bars import normalise_bars

ArrayLike = np.ndarray | pd.Series | pd.DataFrame

FIB_RATIOS: tuple[float, ...] = (0.0, 0.236, 0.382, 0.5, 0.618, 0.786, 1.0)


# ----------------------------------------------------------------------------- plumbing


def _check_period(name: str, period: int, minimum: int = 1) -> int:
    if isinstance(period, bool) or int(period) != period or period < minimum:
        raise ValueError(f"{name}: period must be an integer >= {minimum}, got {period!r}")
    return int(period)


def _to_float(values: ArrayLike) -> np.ndarray:
    """float64 ndarray view of the input (no copy when it already is one); pandas NA -> NaN."""
    if isinstance(values, pd.Series | pd.DataFrame):
        dtypes = [values.dtype] if isinstance(values, pd.Series) else list(values.dtypes)
        if any(isinstance(d, pd.api.extensions.ExtensionDtype) for d in dtypes):
            return values.to_numpy(dtype=np.float64, na_value=np.nan)
        return values.to_numpy(dtype=np.float64)
    return np.asarray(values, dtype=np.float64)


def _as_float(name: str, inputs: Sequence[ArrayLike]) -> list[np.ndarray]:
    arrays = [_to_float(v) for v in inputs]
    shape = arrays[0].shape
    if any(a.shape != shape for a in arrays):
        raise ValueError(f"{name}: inputs differ in shape: {[a.shape for a in arrays]}")
    if arrays[0].ndim not in (1, 2):
        raise ValueError(f"{name} expects 1-D or 2-D input, got {arrays[0].ndim}-D")
    return arrays


def _wrap(template: ArrayLike, values: np.ndarray, name: str | None) -> ArrayLike:
    """Give `values` the pandas shape of `template` (same index/columns), if it had one."""
    if isinstance(template, pd.DataFrame):
        return pd.DataFrame(values, index=template.index, columns=template.columns)
    if isinstance(template, pd.Series):
        return pd.Series(values, index=template.index, name=name)
    return values


def _run(
    name: str,
    kernel: Callable[..., int],
    inputs: Sequence[ArrayLike],
    params: tuple,
    n_out: int = 1,
) -> list[np.ndarray]:
    """Run a 1-D kernel over 1-D inputs, or column by column over 2-D inputs."""
    arrays = _as_float(name, inputs)
    if arrays[0].ndim == 1:
        cols = [np.ascontiguousarray(a) for a in arrays]
        outs = [np.empty(cols[0].shape[0]) for _ in range(n_out)]
        status = kernel(*cols, *params, *outs)
        if status != _kernels.OK:
            raise ValueError(_gap_message(name))
        return outs
    n_rows, n_cols = arrays[0].shape
    labels = list(inputs[0].columns) if isinstance(inputs[0], pd.DataFrame) else range(n_cols)
    # Column-major outputs: each symbol's column is contiguous, so the kernel writes it in
    # place (no per-column copy), and column-major inputs are read without copying too.
    outs = [np.empty((n_rows, n_cols), order="F") for _ in range(n_out)]
    for j in range(n_cols):
        cols = [np.ascontiguousarray(a[:, j]) for a in arrays]
        status = kernel(*cols, *params, *(out[:, j] for out in outs))
        if status != _kernels.OK:
            raise ValueError(_gap_message(name) + f" (column {labels[j]!r})")
    return outs


def _gap_message(name: str) -> str:
    return (
        f"{name}: NaN/inf after the first valid value; only leading NaNs are allowed "
        "(fill gaps first, e.g. with ffill)"
    )


def _series_name(x: ArrayLike) -> str | None:
    return x.name if isinstance(x, pd.Series) else None


# ----------------------------------------------------------------------------- averages


def ema(x: ArrayLike, period: int) -> ArrayLike:
    """Exponential moving average (TA-Lib definition) along the first axis.

    Accepts a 1-D array/Series or a 2-D array/DataFrame (one column per symbol) and
    returns the same kind of object. Leading NaNs are skipped per column; the first
    value is at the `period`-th valid input.
    """
    period = _check_period("ema", period)
    (out,) = _run("ema", _kernels.ema, [x], (period,))
    return _wrap(x, out, _series_name(x))


def sma(x: ArrayLike, period: int) -> ArrayLike:
    """Simple moving average over the last `period` values (TA-Lib SMA)."""
    period = _check_period("sma", period)
    (out,) = _run("sma", _kernels.sma, [x], (period,))
    return _wrap(x, out, _series_name(x))


def wilder(x: ArrayLike, period: int) -> ArrayLike:
    """Wilder's smoothing (RMA, alpha = 1/period), seeded with the SMA of the first values.

    This is the average form ATR uses. DMI uses Wilder *sums* (period times this), which
    cancel out in its ratios; `dmi` handles that internally.
    """
    period = _check_period("wilder", period)
    (out,) = _run("wilder", _kernels.wilder, [x], (period,))
    return _wrap(x, out, _series_name(x))


# ----------------------------------------------------------------------------- bar ranges


def true_range(high: ArrayLike, low: ArrayLike, close: ArrayLike) -> ArrayLike:
    """TA-Lib TRANGE: max(high-low, |high-prev close|, |low-prev close|).

    NaN on the first bar, which has no previous close (as in TA-Lib).
    """
    (out,) = _run("true_range", _kernels.true_range, [high, low, close], ())
    return _wrap(close, out, "true_range")


def atr(high: ArrayLike, low: ArrayLike, close: ArrayLike, period: int = 14) -> ArrayLike:
    """Average true range (TA-Lib ATR): `wilder(true_range, period)`, defined from bar `period`."""
    period = _check_period("atr", period)
    (out,) = _run("atr", _kernels.atr, [high, low, close], (period,))
    return _wrap(close, out, "atr")


class DMI(NamedTuple):
    """The three directional-movement lines; unpacks like a plain tuple."""

    plus_di: ArrayLike
    minus_di: ArrayLike
    adx: ArrayLike


def dmi(high: ArrayLike, low: ArrayLike, close: ArrayLike, period: int = 14) -> DMI:
    """Directional movement: (+DI, -DI, ADX), equal to TA-Lib PLUS_DI, MINUS_DI, ADX.

    Computed in one pass. +DI/-DI are defined from bar `period`, ADX from bar
    `2*period - 1` (counting from the first valid bar). `period` must be >= 2 (TA-Lib's
    period-1 DI is a different, unscaled formula). As in TA-Lib, a true-range sum below
    1e-8 (an absolute threshold) gives DI = 0.
    """
    period = _check_period("dmi", period, minimum=2)
    plus, minus, adx_ = _run("dmi", _kernels.dmi, [high, low, close], (period,), n_out=3)
    return DMI(
        _wrap(close, plus, "plus_di"),
        _wrap(close, minus, "minus_di"),
        _wrap(close, adx_, "adx"),
    )


# ----------------------------------------------------------------------------- swings


def peaks_troughs(
    high: np.ndarray | pd.Series, low: np.ndarray | pd.Series, window: int
) -> tuple[np.ndarray | pd.Series, np.ndarray | pd.Series]:
    """Swing points: (is_peak, is_trough) boolean arrays/Series, one entry per bar.

    Bar i is a peak when high[i] is strictly greater than the high of every other bar
    within `window` bars on each side (i-window .. i+window); a trough likewise with low
    and strictly smaller. Choices where "beats" is vague:

    - ties do not beat: two equal highs within `window` bars of each other mean neither
      is a peak (a flat or exactly double top has no single turning bar);
    - edges: a bar needs a full window on *both* sides, so the first and last `window`
      bars are never swing points. The last `window` bars are unconfirmed: a peak is
      known only `window` bars after it happened, exactly as it would be live, so a
      backtest sees no future;
    - a NaN in the window (or at the bar) means "not a swing point".
    """
    window = _check_period("peaks_troughs window", window)
    hi, lo = _as_float("peaks_troughs", [high, low])
    if hi.ndim != 1:
        raise ValueError("peaks_troughs expects 1-D input")
    hi = np.ascontiguousarray(hi)
    lo = np.ascontiguousarray(lo)
    is_peak = np.empty(hi.shape[0], dtype=np.bool_)
    is_trough = np.empty(lo.shape[0], dtype=np.bool_)
    _kernels.peaks(hi, window, is_peak)
    _kernels.troughs(lo, window, is_trough)
    template = high if isinstance(high, pd.Series) else None
    if template is not None:
        return (
            pd.Series(is_peak, index=template.index, name="peak"),
            pd.Series(is_trough, index=template.index, name="trough"),
        )
    return is_peak, is_trough


def fib_levels(
    swing_low: float | np.ndarray,
    swing_high: float | np.ndarray,
    trend: Literal["up", "down"] = "up",
) -> dict[float, float | np.ndarray]:
    """Fibonacci retracement prices {ratio: price} for ratios 0, .236, .382, .5, .618, .786, 1.

    A retracement is measured back from the end of the move:

    - trend "up" (the swing went low -> high): level r = high - r*(high - low), so 0 is the
      swing high and 1 the swing low, prices falling as the ratio rises;
    - trend "down" (high -> low): level r = low + r*(high - low), 0 at the low, rising.

    Works on scalars or arrays (one swing per symbol). swing_low must not exceed
    swing_high.
    """
    lo = np.asarray(swing_low, dtype=np.float64)
    hi = np.asarray(swing_high, dtype=np.float64)
    if np.any(lo > hi):
        raise ValueError("fib_levels: swing_low is above swing_high")
    if trend not in ("up", "down"):
        raise ValueError(f"fib_levels: trend must be 'up' or 'down', got {trend!r}")
    span = hi - lo
    levels = {}
    for r in FIB_RATIOS:
        price = hi - r * span if trend == "up" else lo + r * span
        levels[r] = float(price) if np.ndim(price) == 0 else price
    return levels


# ----------------------------------------------------------------------------- ticks


def _timestamps_ns(timestamps: object, n: int) -> np.ndarray:
    if isinstance(timestamps, pd.DatetimeIndex | pd.Series) or (
        isinstance(timestamps, np.ndarray) and timestamps.dtype.kind == "M"
    ):
        ts = pd.DatetimeIndex(timestamps)
        if ts.tz is not None:
            ts = ts.tz_convert("UTC")
        out = ts.as_unit("ns").asi8  # pandas 3 indexes may hold s/ms/us units
    else:  # plain numbers: seconds
        out = np.round(np.asarray(timestamps, dtype=np.float64) * 1e9).astype(np.int64)
    if out.shape[0] != n:
        raise ValueError(f"timestamps have {out.shape[0]} entries for {n} values")
    return out


def pct_change_over(
    x: np.ndarray | pd.Series, timestamps: object | None, seconds: float
) -> np.ndarray | pd.Series:
    """Fractional change of each value against the value `seconds` earlier (as of then).

    out[i] = x[i] / x[j] - 1 where j is the last observation at or before
    t[i] - seconds, i.e. the price that was current `seconds` ago, however sparse the
    ticks; NaN when no observation is that old yet. A fraction, so a 2% rise is 0.02.
    `timestamps` is a DatetimeIndex/datetime64 array or plain seconds, non-decreasing;
    None takes the index of a Series `x`.
    """
    if seconds <= 0:
        raise ValueError(f"pct_change_over: seconds must be > 0, got {seconds}")
    values = _to_float(x)
    if values.ndim != 1:
        raise ValueError("pct_change_over expects 1-D input")
    if timestamps is None:
        if not isinstance(x, pd.Series):
            raise ValueError("pct_change_over: timestamps are needed unless x is a Series")
        timestamps = x.index
    ts = _timestamps_ns(timestamps, values.shape[0])
    if ts.shape[0] > 1 and np.any(ts[1:] < ts[:-1]):
        raise ValueError("pct_change_over: timestamps must be non-decreasing")
    back = np.searchsorted(ts, ts - round(seconds * 1e9), side="right") - 1
    out = np.full(values.shape[0], np.nan)
    ok = back >= 0
    out[ok] = values[ok] / values[back[ok]] - 1.0
    return _wrap(x, out, "pct_change") if isinstance(x, pd.Series) else out


EmptyPolicy = Literal["ffill", "nan", "drop"]


def _tick_series(prices: pd.Series) -> pd.Series:
    if not isinstance(prices.index, pd.DatetimeIndex) or prices.index.tz is None:
        raise ValueError("ticks need a tz-aware DatetimeIndex")
    s = prices.astype("float64")
    s.index = s.index.tz_convert("UTC")
    if not s.index.is_monotonic_increasing:
        s = s.sort_index(kind="stable")  # equal times keep arrival order
    return s


def _resampler(s: pd.Series, freq: str | pd.Timedelta):
    # Bars labelled by their start, [start, start+freq), on a grid anchored at the Unix
    # epoch, so every call (backtest or live, any first tick) lands on the same grid.
    return s.resample(pd.Timedelta(freq), label="left", closed="left", origin="epoch")


def resample_last(
    prices: pd.Series, freq: str | pd.Timedelta = "1min", empty: EmptyPolicy = "ffill"
) -> pd.Series:
    """The last price in each fixed interval (a resample, not "the latest tick so far").

    Each bar is labelled by its start (UTC) and holds the last tick in [start, start+freq).
    Intervals without ticks between the first and last tick: "ffill" carries the previous
    price (it is still the current price), "nan" leaves NaN, "drop" omits them. The last
    bar is partial while its interval is still open.
    """
    s = _tick_series(prices)
    out = _resampler(s, freq).last()
    out = _apply_empty(out, out.isna(), empty)
    out.index.name = "timestamp"
    return out


def resample_ohlc(
    prices: pd.Series,
    freq: str | pd.Timedelta = "1min",
    volume: pd.Series | None = None,
    empty: EmptyPolicy = "ffill",
) -> pd.DataFrame:
    """Fixed bars (open, high, low, close, volume) from ticks, labelled by bar start (UTC).

    `volume` is per-tick size aligned with `prices` (missing: volume is the tick count).
    Intervals without ticks: "ffill" makes a flat bar at the previous close with volume 0
    (keeps a regular grid with no NaN, as the bar schema requires), "nan" leaves NaN
    prices and volume 0, "drop" omits them.
    """
    s = _tick_series(prices)
    bars = _resampler(s, freq).ohlc()
    if volume is None:
        vol = _resampler(s, freq).count().astype("float64")
    else:
        v = pd.Series(_to_float(volume), index=prices.index)
        v.index = v.index.tz_convert("UTC")
        vol = _resampler(v.sort_index(kind="stable"), freq).sum(min_count=1).fillna(0.0)
    missing = bars["close"].isna()
    if empty == "ffill":
        close = bars["close"].ffill()
        for col in ("open", "high", "low", "close"):
            bars[col] = bars[col].fillna(close)
    elif empty == "drop":
        bars, vol = bars[~missing], vol[~missing]
    elif empty != "nan":
        raise ValueError(f"empty must be 'ffill', 'nan' or 'drop', got {empty!r}")
    bars["volume"] = vol.reindex(bars.index).fillna(0.0)
    bars.index.name = "timestamp"
    return bars


def _apply_empty(out: pd.Series, missing: pd.Series, empty: EmptyPolicy) -> pd.Series:
    if empty == "ffill":
        return out.ffill()
    if empty == "drop":
        return out[~missing]
    if empty == "nan":
        return out
    raise ValueError(f"empty must be 'ffill', 'nan' or 'drop', got {empty!r}")


def ticks_to_bars(
    ticks: pd.DataFrame,
    freq: str | pd.Timedelta = "1min",
    price: str = "price",
    size: str | None = None,
    empty: EmptyPolicy = "ffill",
) -> pd.DataFrame:
    """A multi-symbol tick frame (DatetimeIndex, columns symbol, `price`, optional `size`)
    resampled into the bar-frame schema of `core.bars` (see `resample_ohlc`)."""
    parts = []
    for symbol, group in ticks.groupby("symbol", sort=True):
        vol = group[size] if size is not None else None
        bars = resample_ohlc(group[price], freq, volume=vol, empty=empty)
        bars.insert(0, "symbol", str(symbol))
        parts.append(bars)
    if not parts:
        from trading_assets.core.bars import empty_bars

        return empty_bars()
    return normalise_bars(pd.concat(parts))


# ----------------------------------------------------------------------------- features


def _shift(values: np.ndarray, k: int) -> np.ndarray:
    """values shifted down by k (k > 0: the past at row i; k < 0: the future), NaN-padded."""
    out = np.full(values.shape[0], np.nan)
    if k >= 0:
        out[k:] = values[: values.shape[0] - k]
    else:
        out[:k] = values[-k:]
    return out


def _feature_frame(x: np.ndarray | pd.Series, columns: dict[str, np.ndarray]):
    if isinstance(x, pd.Series):
        return pd.DataFrame(columns, index=x.index)
    return np.column_stack(list(columns.values())) if columns else np.empty((len(x), 0))


def lagged_returns(x: np.ndarray | pd.Series, n_lags: int) -> pd.DataFrame | np.ndarray:
    """The last `n_lags` one-step returns as features, one column per lag.

    Column `ret_lag{k}` at row t is x[t-k+1] / x[t-k] - 1 (lag 1 = the latest return);
    NaN where the history is too short. Only the past: safe as model input at t.
    """
    n_lags = _check_period("lagged_returns n_lags", n_lags)
    values = _to_float(x)
    step = values / _shift(values, 1) - 1.0
    cols = {f"ret_lag{k}": _shift(step, k - 1) for k in range(1, n_lags + 1)}
    return _feature_frame(x, cols)


def tail_returns(x: np.ndarray | pd.Series, tails: Sequence[int]) -> pd.DataFrame | np.ndarray:
    """Returns over tails of several lengths: column `ret_{L}` = x[t] / x[t-L] - 1.

    This is the knn_shadow flow's "stack of different length tails": the same price history seen
    over short and long look-backs, side by side as model inputs. Past only.
    """
    values = _to_float(x)
    cols = {}
    for tail in tails:
        tail = _check_period("tail_returns tail", tail)
        cols[f"ret_{tail}"] = values / _shift(values, tail) - 1.0
    return _feature_frame(x, cols)


def forward_return(x: np.ndarray | pd.Series, horizon: int) -> np.ndarray | pd.Series:
    """Training target: x[t+horizon] / x[t] - 1 (NaN for the last `horizon` rows).

    Looks into the future by design; use as a label only, never as a feature.
    """
    horizon = _check_period("forward_return horizon", horizon)
    values = _to_float(x)
    out = _shift(values, -horizon) / values - 1.0
    return _wrap(x, out, f"fwd_ret_{horizon}") if isinstance(x, pd.Series) else out
