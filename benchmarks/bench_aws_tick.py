"""One EMA tick in TRADING_ENV=aws (against a moto server on 127.0.0.1) beside the same
tick in local mode, in process, with the number of AWS requests per tick by service and
operation, so a change that multiplies calls shows. Also `make synth`: its time and the
template's resource count.

moto answers in ~3 ms a request, AWS in 5-20 ms from inside the region, so the aws
column is a lower bound; the request counts are what carries over.

    .venv/bin/python benchmarks/bench_aws_tick.py [--quick]
"""

from __future__ import annotations

import argparse
import collections
import json
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


def _keys(n: int) -> list[str]:
    from datetime import date

    from trading_assets.defs.partitions import session_partition_keys

    return session_partition_keys(date.fromisoformat(DAY))[:n]


def _ticks(resources: dict, keys: list[str], counter: collections.Counter | None = None) -> list[float]:
    import dagster as dg

    from trading_assets.cli import QUIET_LOGS
    from trading_assets.defs.ema_concentration.assets import FLOW_ASSETS

    walls, per_tick = [], []
    for i, key in enumerate(keys):
        before = sum(counter.values()) if counter is not None else 0
        t0 = time.perf_counter()
        assert dg.materialize(FLOW_ASSETS, resources=resources, partition_key=key, run_config=QUIET_LOGS).success
        if i > 0:  # the first tick pays imports, numba and client warm-up
            walls.append(time.perf_counter() - t0)
            if counter is not None:
                per_tick.append(sum(counter.values()) - before)
    return walls if counter is None else (walls, per_tick)


def bench(reps: int) -> tuple[list[dict], dict]:
    from moto.server import ThreadedMotoServer

    from trading_assets import settings
    from trading_assets.adapters.aws import clients
    from trading_assets.cli_aws import MOTO_CREDENTIALS, RUN_AWS_ENV, bootstrap
    from trading_assets.defs.resources import local_resources, resources_for

    keys = _keys(reps + 1)
    with tempfile.TemporaryDirectory() as tmp:
        local = _ticks(local_resources(Path(tmp, "local")), keys)

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    calls: collections.Counter = collections.Counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            settings.apply_environment({**RUN_AWS_ENV, **MOTO_CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                                        "TRADING_DATA_DIR": str(Path(tmp, "aws"))})
            world = bootstrap(settings.aws())
            settings.apply_environment({"TRADING_SNS_TOPIC_ARN": world.topic_arn})
            clients.client("sts", "us-east-1")  # make the shared session exist, then count on it
            clients._SESSION.events.register(
                "before-call", lambda model, **_: calls.update([f"{model.service_model.service_name}.{model.name}"]))
            calls.clear()
            aws, per_tick = _ticks(resources_for("aws"), keys, calls)
    finally:
        server.stop()
    total_ticks = len(per_tick) + 1
    by_op = {op: round(n / total_ticks, 1) for op, n in sorted(calls.items())}
    rows = [
        {"mode": "local (SQLite, Parquet files)", "ticks": len(local), "wall_s": round(statistics.median(local), 3),
         "aws_requests_per_tick": 0},
        {"mode": "aws (moto: DynamoDB, S3)", "ticks": len(aws), "wall_s": round(statistics.median(aws), 3),
         "aws_requests_per_tick": statistics.median(per_tick)},
    ]
    return rows, by_op


def bench_synth() -> dict:
    env = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "deploy" / "app.py")], cwd=ROOT / "deploy", env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        return {"synth_s": None, "resources": None, "error": done.stderr[-300:]}
    [template] = (ROOT / "deploy" / "cdk.out").glob("*.template.json")
    return {"synth_s": round(seconds, 1), "resources": len(json.loads(template.read_text())["Resources"])}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rows, by_op = bench(2 if args.quick else 8)
    print("One EMA tick in process (median after a warm-up tick), local mode vs aws mode on moto:")
    print_table(rows)
    print("\nAWS requests per tick by operation (mean over the ticks):")
    print_table([{"operation": op, "per_tick": n} for op, n in by_op.items()])
    synth = bench_synth()
    print("\nmake synth (python deploy/app.py, offline):")
    print_table([synth])
    write_json("aws_tick", {"ticks": rows, "requests_per_tick": by_op, "synth": synth})


if __name__ == "__main__":
    main()
