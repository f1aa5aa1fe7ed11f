"""Technical indicators over numpy arrays / pandas objects, float64, NaN during warm-up.

Definitions follow TA-Lib: EMA is seeded with the SMA of the first `period` values and
then uses alpha = 2 / (period + 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _ema_2d(values: np.ndarray, period: int) -> np.ndarray:
    """EMA down axis 0 of a 2-D array whose columns have no gaps (NaN only at the top)."""
    out = np.full(values.shape, np.nan)
    n_rows = values.shape[0]
    alpha = 2.0 / (period + 1.0)
    for col in range(values.shape[1]):
        x = values[:, col]
        valid = np.flatnonzero(~np.isnan(x))
        if len(valid) == 0:
            continue
        first = valid[0]
        if n_rows - first < period or np.isnan(x[first:]).any():
            if np.isnan(x[first:]).any():
                raise ValueError("ema: NaN inside the series (only leading NaNs are allowed)")
            continue
        prev = x[first : first + period].mean()
        out[first + period - 1, col] = prev
        for i in range(first + period, n_rows):
            prev = prev + alpha * (x[i] - prev)
            out[i, col] = prev
    return out


def ema(x: np.ndarray | pd.Series | pd.DataFrame, period: int):
    """Exponential moving average (TA-Lib definition) along the first axis.

    Accepts a 1-D array/Series or a 2-D array/DataFrame (one column per symbol) and
    returns the same kind of object. Leading NaNs are skipped per column.
    """
    if period < 1:
        raise ValueError(f"ema period must be >= 1, got {period}")
    if isinstance(x, pd.DataFrame):
        return pd.DataFrame(_ema_2d(x.to_numpy(dtype="float64"), period), index=x.index, columns=x.columns)
    if isinstance(x, pd.Series):
        return pd.Series(ema(x.to_numpy(dtype="float64"), period), index=x.index, name=x.name)
    arr = np.asarray(x, dtype="float64")
    if arr.ndim == 1:
        return _ema_2d(arr[:, None], period)[:, 0]
    if arr.ndim == 2:
        return _ema_2d(arr, period)
    raise ValueError(f"ema expects 1-D or 2-D input, got {arr.ndim}-D")
