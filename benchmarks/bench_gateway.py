"""Webhook acknowledgement latency: TradingView-like alerts at a fixed rate (default 100
per second for 30 s) against the real gateway (`python -m trading_assets gateway`, uvicorn,
a subprocess) storing into the local SQLite alert queue (synchronous=FULL, on disk), over
loopback. Every alert is distinct (a new alert id, so each one is a durable insert), the
four sample shapes in turn over five symbols. Goal: p99 <= 25 ms.

The client is open-loop: alert i is due at t0 + i/rate whatever the earlier answers did,
and is sent by a pool of threads over a new connection each (as an external sender like
TradingView would). Latency is from the first byte sent to the full answer read; the
"from due time" column adds any lateness of the client itself, so a stalled server
cannot hide behind a client that waited for it.

    .venv/bin/python benchmarks/bench_gateway.py [--quick] [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
GOAL_P99_MS = 25.0
PASSPHRASE = "bench-passphrase"
SYMBOLS = ["MNQ1!", "MES1!", "M2K1!", "MYM1!", "MGC1!"]


def start_gateway(data_dir: str) -> tuple[subprocess.Popen, str, list[str]]:
    env = {**os.environ, "TRADING_DATA_DIR": data_dir, "TRADINGVIEW_PASSPHRASE": PASSPHRASE, "TRADING_ENV": "local"}
    proc = subprocess.Popen([sys.executable, "-m", "trading_assets", "gateway", "--port", "0"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if m := re.search(r"listening on (http://[\d.]+:\d+)", "".join(lines[:5])):
            return proc, m.group(1), lines
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the gateway did not start:\n" + "".join(lines))


def alerts(n: int) -> list[bytes]:
    from trading_assets.gateway.samples import samples

    shapes = list(samples().values())
    base = datetime(2025, 11, 18, 14, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        body = json.loads(json.dumps(shapes[i % len(shapes)]))
        fired = base + timedelta(seconds=i)
        body["market_data"]["symbol"] = SYMBOLS[i % len(SYMBOLS)]
        body["market_data"]["timenow"] = fired.strftime("%Y-%m-%dT%H:%M:%SZ")
        out.append(json.dumps({"passphrase": PASSPHRASE, **body}).encode())
    return out


def post(host: str, port: int, body: bytes) -> tuple[float, int, str]:
    """(latency in s, HTTP status, answer status) for one alert on a new connection."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        started = time.perf_counter()
        conn.request("POST", "/webhooks/tradingview", body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        answer = resp.read()
        took = time.perf_counter() - started
        status = json.loads(answer).get("status", "?") if answer else "?"
        return took, resp.status, status
    finally:
        conn.close()


def run(url: str, rate: float, seconds: float, warmup_seconds: float = 1.0) -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    n_warm, n = int(rate * warmup_seconds), int(rate * seconds)
    bodies = alerts(n_warm + n)
    results: list[tuple[float, float, int, str] | None] = [None] * (n_warm + n)
    errors: list[str] = []

    def one(i: int, due: float) -> None:
        try:
            took, code, status = post(host, int(port), bodies[i])
            results[i] = (took, time.perf_counter() - due, code, status)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=32) as pool:
        t0 = time.perf_counter() + 0.1
        for i in range(n_warm + n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i, due)
    measured = [r for r in results[n_warm:] if r is not None]
    lat = sorted(r[0] * 1000 for r in measured)
    from_due = sorted(r[1] * 1000 for r in measured)
    bad = [r for r in measured if r[2] != 200 or r[3] != "accepted"]

    def pct(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))] if values else float("nan")

    return {
        "rate_per_s": rate, "seconds": seconds, "sent": n, "accepted": len(measured) - len(bad),
        "errors": len(errors) + len(bad) + (n - len(measured) - len(errors)),
        "p50_ms": pct(lat, 50), "p95_ms": pct(lat, 95), "p99_ms": pct(lat, 99), "max_ms": lat[-1] if lat else None,
        "p99_from_due_ms": pct(from_due, 99), "max_from_due_ms": from_due[-1] if from_due else None,
        "error_samples": (errors + [f"{r[2]} {r[3]}" for r in bad])[:5],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s instead of 30 s")
    parser.add_argument("--rate", type=float, default=100.0, help="alerts per second (default 100)")
    parser.add_argument("--seconds", type=float, default=None, help="measured duration (default 30, --quick 5)")
    args = parser.parse_args()
    seconds = args.seconds or (5.0 if args.quick else 30.0)

    # under the repo's (ignored) data dir, on disk rather than a tmpfs /tmp: the fsync is part of the cost
    (ROOT / ".trading_data").mkdir(exist_ok=True)
    data_dir = tempfile.mkdtemp(prefix="bench-gateway-", dir=ROOT / ".trading_data")
    proc, url, _ = start_gateway(data_dir)
    try:
        result = run(url, args.rate, seconds)
    finally:
        proc.terminate()
        proc.wait(15)
    from trading_assets.adapters.sqlite.queue import SqliteAlertQueue

    stored = SqliteAlertQueue(Path(data_dir) / "alerts.sqlite").depth()
    met = result["p99_ms"] <= GOAL_P99_MS and result["errors"] == 0
    row = {k: v for k, v in result.items() if k != "error_samples"}
    row["stored"] = stored
    row["goal"] = f"p99 <= {GOAL_P99_MS:g} ms: {'met' if met else 'NOT met'}"
    print(f"Acknowledgement latency, {args.rate:g} alerts/s for {seconds:g} s (+1 s warm-up), gateway on {url} "
          f"with the SQLite queue in {data_dir} ({os.cpu_count()} CPUs)")
    print_table([row], ["rate_per_s", "sent", "accepted", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                        "p99_from_due_ms", "stored"])
    if result["error_samples"]:
        print("errors, e.g.:", *result["error_samples"], sep="\n  ")
    print(row["goal"])
    path = write_json("gateway", {"goal_p99_ms": GOAL_P99_MS, "met": met, "stored": stored, **result,
                                  "queue_dir": data_dir})
    print(f"wrote {path.relative_to(ROOT)}")
    import shutil

    shutil.rmtree(data_dir, ignore_errors=True)
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
