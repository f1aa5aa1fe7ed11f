"""One hourly tick of the IG Fibonacci flow, in process, for 1 and 50 markets.

For each size: wall time of `dagster.materialize` over the six assets (ephemeral instance,
Parquet IO to a temp dir, replay FX bars, paper broker with brackets, SQLite ledger), the
work inside the assets (their `work_ms` metadata) and so Dagster's overhead per asset;
the same pipeline as plain function calls without Dagster; and the floor (the same six
assets and two checks doing nothing, on static partitions, run the same way in the same
process), as for the EMA flow in bench_tick.py.

    .venv/bin/python benchmarks/bench_fib_tick.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

DAY = date(2025, 11, 13)  # an FX trade date whose hours enter and exit (replay data)
NODES = ("bars", "swings", "signals", "orders", "transactions", "equity")


def epics(n: int) -> list[str]:
    majors = ["CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP", "CS.D.USDJPY.MINI.IP", "CS.D.AUDUSD.MINI.IP"]
    return (majors + [f"CS.D.X{i:02d}USD.MINI.IP" for i in range(n)])[:n]


def _keys(n: int) -> list[str]:
    from trading_assets.defs.fib_retracement.partitions import trade_date_keys

    return trade_date_keys(DAY)[:n]


def bench_size(n_markets: int, reps: int) -> dict:
    import dagster as dg
    import pandas as pd

    from trading_assets.cli import QUIET_LOGS
    from trading_assets.core import fx_hours
    from trading_assets.core.bars import bar_problems
    from trading_assets.core.strategies import fib_retracement as strategy
    from trading_assets.defs.fib_retracement import assets as flow
    from trading_assets.defs.fib_retracement.partitions import fx_bar_window
    from trading_assets.defs.fib_retracement.settings import FibInstrument, FibRetracementSettings
    from trading_assets.defs.resources import local_resources

    markets = epics(n_markets)
    settings = FibRetracementSettings(instruments=[FibInstrument(epic=e) for e in markets])
    keys = _keys(reps + 1)
    walls, works, orders = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        resources = local_resources(Path(tmp), fib_retracement=settings)
        instance = dg.DagsterInstance.ephemeral()
        for i, key in enumerate(keys):
            t0 = time.perf_counter()
            result = dg.materialize(flow.FLOW_ASSETS, resources=resources, partition_key=key, instance=instance,
                                    run_config=QUIET_LOGS)
            wall = time.perf_counter() - t0
            assert result.success, key
            orders += len(result.output_for_node("fib_retracement__orders"))
            work = sum(m.metadata["work_ms"].value for node in NODES
                       for m in result.asset_materializations_for_node(f"fib_retracement__{node}")) / 1000
            if i > 0:  # the first tick pays imports, numba and partition warm-up
                walls.append(wall)
                works.append(work)

        provider = resources["fib_retracement_prices"].get()
        params, sizes = settings.params(), {e: 1.0 for e in markets}
        plain = []
        for key in keys[1:]:
            t0 = time.perf_counter()
            start, end = fx_bar_window(key)
            last = start.tz_convert(fx_hours.TZ).tz_localize(None).to_pydatetime()
            first = fx_hours.previous_bar_starts(last, params.lookback + flow.SPARE_BARS)[0]
            bars = provider.get_bars(markets, pd.Timestamp(first).tz_localize(fx_hours.TZ).tz_convert("UTC"),
                                     end, "1h")
            bar_problems(bars, markets, last_bar_start=start)
            strategy.swings_frame(bars, params)
            signals = strategy.signals_frame(bars, params)
            strategy.plan(signals, sizes, {})
            plain.append(time.perf_counter() - t0)
    wall, work = statistics.median(walls), statistics.median(works)
    return {"markets": n_markets, "ticks": len(walls), "orders": orders, "wall_s": round(wall, 3),
            "work_in_assets_s": round(work, 3), "overhead_per_asset_ms": round((wall - work) / 6 * 1000, 1),
            "plain_calls_s": round(statistics.median(plain), 3)}


def bench_floor(reps: int) -> float:
    """The floor job (benchmarks/_floor.py) over as many ticks, run the same way."""
    from _floor import floor_tick_wall

    return floor_tick_wall(_keys(reps + 1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer ticks (smoke test)")
    args = parser.parse_args()
    reps = 3 if args.quick else 8
    rows = [bench_size(n, reps) for n in (1, 50)]
    floor = bench_floor(reps)
    for row in rows:
        row["floor_s"] = round(floor, 3)
        row["overhead_vs_floor"] = round((row["wall_s"] - row["work_in_assets_s"]) / floor, 2)
    print("One hourly tick of fib_retracement in process (median over ticks after a warm-up); floor = the")
    print("same six assets and two checks doing nothing, on static partitions, run the same way:")
    print_table(rows)
    path = write_json("fib_tick", {"tick": rows, "quick": args.quick})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
