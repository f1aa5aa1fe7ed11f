"""One tick of the EMA concentration flow, in process, for 1 / 100 / 500 symbols.

For each size: wall time of `dagster.materialize` over the six assets (ephemeral instance,
Parquet IO to a temp dir, paper broker, SQLite ledger), the work done inside the assets
(their `work_ms` metadata), and so Dagster's overhead per asset; plus the same pipeline as
plain function calls, without Dagster, for comparison. Also times `make run`'s command
(the job over a whole session's ticks, persistent SQLite instance) end to end.

    .venv/bin/python benchmarks/bench_tick.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
DAY = "2025-11-18"


def _tick_keys(n: int) -> list[str]:
    from datetime import date

    from trading_assets.defs.partitions import session_partition_keys

    return session_partition_keys(date.fromisoformat(DAY))[:n]


def bench_size(n_symbols: int, reps: int) -> dict:
    import dagster as dg

    from trading_assets.cli import QUIET_LOGS
    from trading_assets.core.bars import bar_problems
    from trading_assets.core.calendar import previous_sessions, session_open_close
    from trading_assets.core.strategies import ema_concentration as strategy
    from trading_assets.defs.ema_concentration import assets as flow
    from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
    from trading_assets.defs.partitions import bar_window
    from trading_assets.defs.resources import local_resources
    from trading_assets.resources.market_data import ReplayMarketDataResource

    watchlist = [f"S{i:04d}" for i in range(n_symbols - 1)]
    keys = _tick_keys(reps + 1)
    walls, works = [], []
    with tempfile.TemporaryDirectory() as tmp:
        resources = local_resources(
            Path(tmp),
            market_data=ReplayMarketDataResource(allow_any_symbol=True),
            ema_concentration=EmaConcentrationSettings(watchlist=watchlist),
        )
        for i, key in enumerate(keys):
            t0 = time.perf_counter()
            result = dg.materialize(flow.FLOW_ASSETS, resources=resources, partition_key=key,
                                    run_config=QUIET_LOGS)
            wall = time.perf_counter() - t0
            work = sum(
                m.metadata["work_ms"].value
                for node in ("bars", "indicators", "signals", "orders", "transactions", "equity")
                for m in result.asset_materializations_for_node(f"ema_concentration__{node}")
            ) / 1000
            if i > 0:  # the first tick pays imports and numba/calendar warm-up
                walls.append(wall)
                works.append(work)

        # the same pipeline as plain calls (no Dagster, no IO manager)
        provider = resources["market_data"].get()
        params = strategy.Params()
        plain = []
        for key in keys[1:]:
            t0 = time.perf_counter()
            start, end = bar_window(key)
            sessions = previous_sessions(start.tz_convert("America/New_York").date(), 8)
            fetch_from, _ = session_open_close(sessions[0])
            symbols = ["TQQQ", *watchlist]
            bars = provider.get_bars(symbols, fetch_from.tz_convert("UTC"), end, "30min")
            bar_problems(bars, symbols, last_bar_start=start)
            signals = strategy.signals_frame(strategy.indicator_frame(bars, params))
            strategy.plan(strategy.Signal(signals.loc["TQQQ", "signal"]), params, {},
                          signals["price"].to_dict(), 100_000.0)
            plain.append(time.perf_counter() - t0)
    wall, work = statistics.median(walls), statistics.median(works)
    return {
        "symbols": n_symbols,
        "ticks": len(walls),
        "wall_s": round(wall, 3),
        "work_in_assets_s": round(work, 3),
        "overhead_per_asset_ms": round((wall - work) / 6 * 1000, 1),
        "plain_calls_s": round(statistics.median(plain), 3),
    }


def bench_floor(reps: int) -> float:
    """The floor job (benchmarks/_floor.py) over as many ticks, run the same way."""
    from _floor import floor_tick_wall

    return floor_tick_wall(_tick_keys(reps + 1))


def _fresh_home(tmp: str) -> dict[str, str]:
    home = Path(tmp, "home")
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    return {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(Path(tmp, "data"))}


def bench_make_run_floor(ticks: int | None) -> float:
    """The floor job over the same ticks in a fresh process on a fresh SQLite instance."""
    keys = _tick_keys(ticks or 13)
    with tempfile.TemporaryDirectory() as tmp:
        env = _fresh_home(tmp)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "_floor.py"), *keys], cwd=ROOT, env=env,
                       check=True, capture_output=True)
        return time.perf_counter() - t0


def bench_make_run(ticks: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = _fresh_home(tmp)
        cmd = [sys.executable, "-m", "trading_assets", "run"]
        if ticks:
            cmd += [a for k in _tick_keys(ticks) for a in ("--tick", k)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-2000:] + proc.stderr[-2000:])
    n = ticks or 13
    return {"command": "python -m trading_assets run", "ticks": n, "wall_s": round(wall, 2),
            "per_tick_s": round(wall / n, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer reps and symbols (smoke test)")
    args = parser.parse_args()
    sizes, reps = ((1, 100), 2) if args.quick else ((1, 100, 500), 5)
    rows = [bench_size(n, reps) for n in sizes]
    floor = bench_floor(reps)
    for row in rows:
        overhead = row["wall_s"] - row["work_in_assets_s"]
        row["floor_s"] = round(floor, 3)
        row["overhead_vs_floor"] = round(overhead / floor, 2)
    print("One tick of ema_concentration in process (median over ticks after a warm-up); floor = the same")
    print("six assets and two checks doing nothing, on static partitions, run the same way:")
    print_table(rows)
    goals = {"overhead_vs_floor <= 1.3": all(r["overhead_vs_floor"] <= 1.3 for r in rows)}
    big = [r for r in rows if r["symbols"] == 500]
    if big:
        goals["500-symbol tick <= 0.4 s"] = big[0]["wall_s"] <= 0.4
    ticks = 3 if args.quick else None
    run_row = bench_make_run(ticks)
    run_floor = bench_make_run_floor(ticks)
    run_row["floor_wall_s"] = round(run_floor, 2)
    run_row["vs_floor"] = round(run_row["wall_s"] / run_floor, 2)
    goals["make run <= 1.15x floor"] = run_row["vs_floor"] <= 1.15
    print("\n`make run` command end to end (fresh DAGSTER_HOME, persistent SQLite instance) vs the floor job")
    print("run the same way (fresh process, the same ticks in process):")
    print_table([run_row])
    print("\nGoals: " + ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in goals.items()))
    path = write_json("tick", {"tick": rows, "make_run": run_row, "goals": goals, "quick": args.quick})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
