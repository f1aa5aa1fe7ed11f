"""Indicator speed: ours vs TA-Lib (and pandas for EMA), measured in the same run.

    .venv/bin/python benchmarks/bench_indicators.py          # 1e7 bars
    .venv/bin/python benchmarks/bench_indicators.py --quick  # 1e6 bars, a smoke test

Inputs are a seeded random walk of OHLC bars. Each row prints the best-of-N wall time of
ours and of the reference, and `ratio` = ours / reference (< 1 is faster). Goals from
issue 3: EMA ratio <= 1 vs TA-Lib, the whole DMI <= 0.8 x TA-Lib's three calls
(PLUS_DI + MINUS_DI + ADX), peaks/troughs over 1e7 bars <= 0.5 s. A plain memory copy of
the close column is printed as the floor. Results go to benchmarks/results/indicators.json.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import print_table, timeit_best, timeit_interleaved, write_json

from trading_assets.core import indicators as ind


def random_walk_bars(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """High, low, close of a positive random walk with realistic intrabar ranges."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    spread = np.abs(rng.normal(0.0, 1e-3, n)) * close
    high = close + spread * rng.uniform(0.0, 1.0, n)
    low = close - spread * rng.uniform(0.0, 1.0, n)
    prev = np.r_[close[0], close[:-1]]
    return np.maximum(high, prev), np.minimum(low, prev), close


def _row(
    name: str,
    ours: Callable[[], object],
    reference: Callable[[], object] | None,
    ref_name: str,
    goal: float | None,
    repeat: int,
    goal_seconds: float | None = None,
) -> dict:
    if reference is None:
        t_ours, t_ref = timeit_best(ours, repeat=repeat), float("nan")
    else:
        # in turns, so load from elsewhere on the machine hits both sides alike
        times = timeit_interleaved({"ours": ours, "ref": reference}, repeat=repeat)
        t_ours, t_ref = times["ours"], times["ref"]
    ratio = t_ours / t_ref if reference is not None else float("nan")
    if goal is not None:
        verdict = "ok" if ratio <= goal else "MISSED"
        goal_text = f"ratio <= {goal}"
    elif goal_seconds is not None:
        verdict = "ok" if t_ours <= goal_seconds else "MISSED"
        goal_text = f"<= {goal_seconds} s"
    else:
        verdict, goal_text = "", ""
    return {
        "indicator": name,
        "ours_ms": t_ours * 1e3,
        "reference": ref_name,
        "ref_ms": t_ref * 1e3,
        "ratio": ratio,
        "goal": goal_text,
        "verdict": verdict,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1e6 bars instead of 1e7")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    n = 1_000_000 if args.quick else 10_000_000
    import talib  # bench/dev dependency only

    high, low, close = random_walk_bars(n)
    close_s = pd.Series(close)
    r = args.repeat

    # compile/load every kernel before timing anything
    ind.ema(close[:100], 10)
    ind.dmi(high[:100], low[:100], close[:100], 14)

    def dmi_talib() -> None:
        talib.PLUS_DI(high, low, close, 14)
        talib.MINUS_DI(high, low, close, 14)
        talib.ADX(high, low, close, 14)

    rows = [
        _row("memcpy (floor)", close.copy, None, "", None, r),
        _row("ema(10)", lambda: ind.ema(close, 10), lambda: talib.EMA(close, 10), "talib.EMA", 1.0, r),
        _row(
            "ema(10)",
            lambda: ind.ema(close, 10),
            lambda: close_s.ewm(span=10, adjust=False).mean(),
            "pandas ewm",
            None,
            r,
        ),
        _row(
            "ema(200)",
            lambda: ind.ema(close, 200),
            lambda: talib.EMA(close, 200),
            "talib.EMA",
            1.0,
            r,
        ),
        _row(
            "sma(20)",
            lambda: ind.sma(close, 20),
            lambda: talib.SMA(close, 20),
            "talib.SMA",
            None,
            r,
        ),
        _row(
            "wilder(14)",
            lambda: ind.wilder(close, 14),
            lambda: talib.EMA(close, 27),
            "talib.EMA(27)",
            None,
            r,
        ),
        _row(
            "true_range",
            lambda: ind.true_range(high, low, close),
            lambda: talib.TRANGE(high, low, close),
            "talib.TRANGE",
            None,
            r,
        ),
        _row(
            "atr(14)",
            lambda: ind.atr(high, low, close, 14),
            lambda: talib.ATR(high, low, close, 14),
            "talib.ATR",
            None,
            r,
        ),
        _row(
            "dmi(14) +DI,-DI,ADX",
            lambda: ind.dmi(high, low, close, 14),
            dmi_talib,
            "talib 3 calls",
            0.8,
            r,
        ),
        _row(
            "peaks_troughs(5)",
            lambda: ind.peaks_troughs(high, low, 5),
            None,
            "",
            None,
            r,
            goal_seconds=0.5 * n / 10_000_000,
        ),
        _row(
            "peaks_troughs(50)",
            lambda: ind.peaks_troughs(high, low, 50),
            None,
            "",
            None,
            r,
            goal_seconds=0.5 * n / 10_000_000,
        ),
        _row(
            "peaks_troughs(500)",
            lambda: ind.peaks_troughs(high, low, 500),
            None,
            "",
            None,
            r,
            goal_seconds=0.5 * n / 10_000_000,
        ),
    ]
    print(f"\nindicators over {n:,} bars, best of {r} (ratio = ours / reference)\n")
    print_table(rows)
    path = write_json("indicators", {"bars": n, "repeat": r, "rows": rows})
    print(f"\nwrote {path}")
    missed = [row["indicator"] for row in rows if row["verdict"] == "MISSED"]
    if missed:
        print(f"goals missed: {missed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
