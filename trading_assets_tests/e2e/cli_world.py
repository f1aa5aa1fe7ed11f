"""What the CLI and daemon end-to-end tests share: a temp world (DAGSTER_HOME with the
project's dagster.yaml, TRADING_DATA_DIR), a FakeAlpaca on 127.0.0.1 the EMA flow trades
through (ALPACA_BASE_URL), and `python -m trading_assets run` as a real subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets_tests.fakes.alpaca import API_KEY, SECRET_KEY, FakeAlpaca

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
FLOW = "ema_concentration"
TICK = "2025-11-18-12:30"  # TQQQ turns bullish in the replay data: the tick buys
LATER_TICK = "2025-11-18-13:00"
TQQQ_PRICE = 547.53  # the replay close at TICK; the fake fills market orders at it


@dataclass
class World:
    home: Path
    data: Path
    env: dict[str, str]
    fake: FakeAlpaca

    def cli(self, *args: str, timeout: float = 90, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        """Run the CLI to the end (killed after `timeout` seconds), `env` added to the world's."""
        return subprocess.run([sys.executable, "-m", "trading_assets", "run", *args], cwd=ROOT,
                              env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout)

    def start_cli(self, *args: str, stderr: Path | None = None) -> subprocess.Popen[str]:
        """Start the CLI; its stderr goes to `stderr` (a file a test can poll) or is dropped."""
        err = stderr.open("w") if stderr is not None else subprocess.DEVNULL
        return subprocess.Popen([sys.executable, "-m", "trading_assets", "run", *args], cwd=ROOT, env=self.env,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def ledger(self) -> SqliteLedger:
        return SqliteLedger(self.data / "ledger.sqlite")

    def assert_one_order_filled_once(self, tick: str = TICK) -> None:
        """The broker holds one order, received one POST, and the ledger agrees: the intent
        is filled with exactly one fill."""
        assert (self.fake.order_posts(), self.fake.order_count()) == (1, 1)
        [intent] = self.ledger().intents(FLOW, tick)
        assert (intent.symbol, intent.side.value, intent.status) == ("TQQQ", "buy", "filled")
        fills = self.ledger().transactions(flow=FLOW)
        fills = fills[(fills["partition_key"] == tick) & (fills["kind"] == "fill")]
        assert len(fills) == 1 and float(fills["qty"].iloc[0]) == intent.qty


@contextmanager
def alpaca_world(base: Path, monkeypatch: pytest.MonkeyPatch, broker: str = "alpaca") -> Iterator[World]:
    """A fresh instance and data dir under `base`, the flow's broker a started FakeAlpaca
    (`broker="paper"`: the default paper broker; the fake is still started, unused).

    DAGSTER_HOME is set in this process too: dagster.yaml reads it."""
    home, data = base / "dagster_home", base / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    home.mkdir(parents=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    fake = FakeAlpaca()
    fake.start()
    fake.set_price("TQQQ", TQQQ_PRICE)
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(data), "TRADING_ENV": "local",
           "TRADING_BROKER_EMA_CONCENTRATION": "alpaca", "ALPACA_API_KEY": API_KEY,
           "ALPACA_SECRET_KEY": SECRET_KEY, "ALPACA_BASE_URL": fake.url, "DAGSTER_TELEMETRY_ENABLED": "false"}
    if broker == "paper":
        env.pop("TRADING_BROKER_EMA_CONCENTRATION")
    with dg.DagsterInstance.from_config(str(home)):
        pass  # create the SQLite storages once, before processes race to migrate them
    try:
        yield World(home, data, env, fake)
    finally:
        fake.stop()


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.2) -> None:
    """Poll until `predicate()` is truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting until {what}"
        time.sleep(interval)


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a process started with `start_new_session=True` and its children (a daemon
    and what it spawned); SIGKILL them if they are not gone after `timeout` seconds."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kill_processes_mentioning(marker: str) -> None:
    """SIGKILL every process whose command line contains `marker` (a test's unique temp
    path): code servers and run workers a daemon started outlive it when a run hangs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if marker in cmdline:
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue
