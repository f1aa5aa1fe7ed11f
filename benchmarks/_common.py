"""Tiny shared helpers for the benchmark scripts: best-of timing, a plain table, JSON out.

Every benchmark reports the best of several runs (the least disturbed by other work on a
shared machine) and writes its numbers to `benchmarks/results/<name>.json` so they can be
compared across commits.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def timeit_best(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> float:
    """Best wall time of `repeat` calls of `fn`, in seconds, after `warmup` untimed calls.

    The warm-up call absorbs JIT compilation and cold caches, so the number is the
    steady-state cost a long-running process pays.
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def timeit_interleaved(
    fns: dict[str, Callable[[], Any]], repeat: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Best wall time of each function, in seconds, with the functions run in turns.

    Use this for ratios on a shared machine: a burst of load from elsewhere hits every
    contender in the same round instead of all runs of one of them.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(max(1, repeat)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Print rows (dicts) as an aligned plain-text table and return the text."""
    if not rows:
        print("(no rows)")
        return "(no rows)"
    cols = list(columns) if columns else list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        pairs = zip(row, widths, strict=True)
        lines.append("  ".join(v.rjust(w) if _numeric(v) else v.ljust(w) for v, w in pairs))
    text = "\n".join(lines)
    print(text)
    return text


def _numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def write_json(name: str, payload: dict[str, Any]) -> Path:
    """Write `payload` (plus when/where it was measured) to benchmarks/results/<name>.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return path
