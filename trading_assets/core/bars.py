"""The one bar-frame schema every market-data provider returns, and its validation.

A bar frame stacks many symbols in one frame:

    index   'timestamp', tz-aware UTC, the bar's *start*
    columns symbol (str), open, high, low, close, volume (float64)
    order   sorted by (symbol, timestamp), no duplicate (symbol, timestamp)

Vectorised code pivots it to wide panels (timestamp x symbol) with `panel()`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = ("symbol", *PRICE_COLUMNS, "volume")


def empty_bars() -> pd.DataFrame:
    """A zero-row frame with the bar schema."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BAR_COLUMNS})
    frame["symbol"] = frame["symbol"].astype(object)
    frame.index = pd.DatetimeIndex([], tz="UTC", name="timestamp")
    return frame


def normalise_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a provider's frame to the schema: UTC index, float columns, sorted."""
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"bar frame is missing columns {missing}; has {list(frame.columns)}")
    out = frame.loc[:, list(BAR_COLUMNS)].copy()
    index = pd.DatetimeIndex(out.index)
    if index.tz is None:
        raise ValueError("bar frame index must be tz-aware (got naive timestamps)")
    out.index = index.tz_convert("UTC").rename("timestamp")
    out["symbol"] = out["symbol"].astype(str).astype(object)
    for col in (*PRICE_COLUMNS, "volume"):
        out[col] = out[col].astype("float64")
    order = np.lexsort((out.index.asi8, out["symbol"].to_numpy()))
    return out.iloc[order]


def bar_problems(
    frame: pd.DataFrame,
    symbols: Sequence[str] | None = None,
    last_bar_start: pd.Timestamp | None = None,
) -> list[str]:
    """Everything wrong with a bar frame, as human-readable lines (empty = good).

    Checks: schema, tz, NaN/inf, high/low consistency, ordering, duplicates, and, when
    given, that every expected symbol is present and its last bar starts at
    `last_bar_start` (the bar frame is fresh for the tick).
    """
    problems: list[str] = []
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        return [f"missing columns: {missing}"]
    if not isinstance(frame.index, pd.DatetimeIndex) or frame.index.tz is None:
        return ["index is not a tz-aware DatetimeIndex"]
    if len(frame) == 0:
        return ["no bars at all"]
    values = frame.loc[:, [*PRICE_COLUMNS, "volume"]].to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    if bad.any():
        rows = frame.loc[bad.any(axis=1)]
        sample = ", ".join(f"{s}@{t.isoformat()}" for t, s in zip(rows.index[:5], rows["symbol"][:5], strict=True))
        problems.append(f"{int(bad.any(axis=1).sum())} bars have NaN/inf values (e.g. {sample})")
    hi, lo = frame["high"].to_numpy(), frame["low"].to_numpy()
    op, cl = frame["open"].to_numpy(), frame["close"].to_numpy()
    with np.errstate(invalid="ignore"):
        inconsistent = (hi < np.maximum(op, cl) - 1e-9) | (lo > np.minimum(op, cl) + 1e-9)
    if inconsistent.any():
        problems.append(f"{int(inconsistent.sum())} bars have high/low outside open/close")
    sym = frame["symbol"].to_numpy()
    ts = frame.index.asi8
    if len(frame) > 1:
        same = sym[1:] == sym[:-1]
        if (sym[1:] < sym[:-1]).any() or (same & (ts[1:] < ts[:-1])).any():
            problems.append("bars are not sorted by (symbol, timestamp)")
        if (same & (ts[1:] == ts[:-1])).any():
            problems.append("duplicate (symbol, timestamp) bars")
    if symbols is not None:
        absent = sorted(set(symbols) - set(sym))
        if absent:
            problems.append(f"no bars for {absent}")
    if last_bar_start is not None:
        last = frame.groupby("symbol", sort=True).apply(lambda g: g.index.max(), include_groups=False)
        stale = {s: t for s, t in last.items() if t != last_bar_start}
        if stale:
            sample = ", ".join(f"{s} last {t.isoformat()}" for s, t in list(stale.items())[:5])
            problems.append(
                f"bars not fresh for the tick {last_bar_start.isoformat()}: {sample}"
            )
    return problems


def panel(frame: pd.DataFrame, column: str = "close") -> pd.DataFrame:
    """Wide view (timestamp x symbol) of one column, for vectorised indicators."""
    return frame.pivot_table(index=frame.index, columns="symbol", values=column, aggfunc="last")


def last_prices(frame: pd.DataFrame) -> dict[str, float]:
    """Each symbol's most recent close."""
    last = frame.groupby("symbol", sort=True)["close"].last()
    return {str(k): float(v) for k, v in last.items()}
