"""The local alert stack as `make dev` runs it, as real processes: the gateway on uvicorn,
the alert worker, `python -m trading_assets alert`. Alerts acknowledged while no worker is
up survive the gateway being killed (-9) and are processed once when the worker starts;
a restarted worker processes nothing twice."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from trading_assets.adapters.paper.broker import PaperBroker

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.daemon


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_alerts_acknowledged_before_a_gateway_crash_are_traded_once_by_the_worker(tmp_path, monkeypatch):
    home, data = tmp_path / "home", tmp_path / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # dagster.yaml reads it
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(home)):
        pass
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(data), "TRADING_ENV": "local"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def cli(*args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "trading_assets", *args], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

    gateway = cli("gateway", "--port", str(port))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        sent = subprocess.run([sys.executable, "-m", "trading_assets", "alert", "--url",
                               f"{url}/webhooks/tradingview", "--now"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert sent.returncode == 0 and sent.stdout.count("200 accepted") == 4, sent.stdout + sent.stderr
    finally:
        gateway.send_signal(signal.SIGKILL)  # acknowledged, not yet processed: the gateway dies
        gateway.wait(timeout=10)

    for _ in range(2):  # the worker processes what is stored; a restarted one finds nothing new
        done = subprocess.run([sys.executable, "-m", "trading_assets", "worker", "--once"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
    broker = PaperBroker(data / "paper_trend_dmi.sqlite", allow_short=True)
    assert [(o.side.value, o.status.value) for o in broker.orders()] == [
        ("buy", "filled"), ("sell", "filled"), ("buy", "filled"), ("sell", "filled"), ("sell", "filled")]
    assert [(p.qty) for p in broker.positions()] == [-1.0]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"trend_dmi/launched_by": "worker"}))
        assert len(runs) == 4 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
