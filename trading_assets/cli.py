"""Command line: `python -m trading_assets run` (what `make run` calls).

Runs the main job, the EMA concentration flow, over every 30-minute tick of the most
recent completed NYSE session on the embedded default (replay data, paper broker, SQLite
ledger), through the real Dagster job and the local instance, so the runs appear in the
UI afterwards (`make dev`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date

from trading_assets.core import calendar

JOB = "ema_concentration_job"
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _metadata(result, node: str, key: str):
    mats = result.asset_materializations_for_node(node)
    return mats[0].metadata[key].value if mats and key in mats[0].metadata else None


def run(day: date | None, keys: list[str] | None = None) -> int:
    import dagster as dg

    from trading_assets.definitions import defs
    from trading_assets.defs.partitions import session_partition_keys
    from trading_assets.defs.resources import data_dir, trading_env

    day = day or calendar.last_completed_session()
    keys = keys or session_partition_keys(day)
    env = trading_env()
    home = os.environ.get("DAGSTER_HOME")
    instance = dg.DagsterInstance.get() if home else dg.DagsterInstance.ephemeral()
    job = defs().resolve_job_def(JOB)
    print(f"trading_assets: {JOB} on {day} ({len(keys)} ticks), TRADING_ENV={env}")
    print(f"{'tick (New York)':<18} {'signal':<9} {'price':>9}  {'orders':<44} {'equity':>12}")
    started = time.perf_counter()
    failures = 0
    for key in keys:
        result = job.execute_in_process(partition_key=key, instance=instance, run_config=QUIET_LOGS,
                                        raise_on_error=False)
        if not result.success:
            failures += 1
            failure = next((e for e in result.all_events if e.is_failure), None)
            message = failure.event_specific_data.error.message.strip() if failure is not None and getattr(
                failure.event_specific_data, "error", None) else "see the run in the UI"
            print(f"{key:<18} FAILED: {message.splitlines()[0][:100]}")
            continue
        signal = _metadata(result, "ema_concentration__signals", "target_signal")
        price = _metadata(result, "ema_concentration__indicators", "target_price")
        orders = result.output_for_node("ema_concentration__orders")
        described = ", ".join(
            f"{r.side} {r.qty:g} {r.symbol} {r.status}" for r in orders.itertuples()
        ) or "-"
        placed = _metadata(result, "ema_concentration__orders", "placed_this_run")
        if len(orders) and not placed:
            described += " (already placed)"
        equity = _metadata(result, "ema_concentration__equity", "equity")
        print(f"{key:<18} {signal:<9} {price:>9.2f}  {described[:44]:<44} {equity:>12,.2f}")
    elapsed = time.perf_counter() - started
    base = data_dir()
    print(f"\n{len(keys) - failures}/{len(keys)} ticks succeeded in {elapsed:.1f}s.")
    print("Results:")
    print(f"  ledger (intents, transactions, equity): {base / 'ledger.sqlite'}")
    print(f"  paper broker account:                   {base / 'paper_ema_concentration.sqlite'}")
    print(f"  asset files (Parquet per tick):          {base / 'assets'}")
    print(f"  Dagster runs and events:                 {home or '(ephemeral instance)'}")
    print("  Browse lineage, runs and metadata:       make dev  ->  http://127.0.0.1:3000")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trading_assets")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the EMA concentration flow over one session's ticks")
    p_run.add_argument("--day", type=date.fromisoformat, default=None,
                       help="session date (default: the most recent completed NYSE session)")
    p_run.add_argument("--tick", action="append", dest="ticks", default=None,
                       help="only these partition keys, e.g. 2025-11-26-10:00 (repeatable)")
    args = parser.parse_args(argv)
    if args.command == "run":
        if args.day is not None and calendar.closed_reason(args.day):
            print(f"error: {calendar.closed_reason(args.day)}; pick a trading day", file=sys.stderr)
            return 2
        return run(args.day, args.ticks)
    return 2

