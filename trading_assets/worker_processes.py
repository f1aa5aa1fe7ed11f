"""`python -m trading_assets worker --processes N`: N alert workers, one process each.

One warm worker runs one alert's Dagster run at a time (about 0.4-0.7 s a run, most of it
Dagster's own event writes), so a burst of alerts over many symbols queues behind it.
Several processes consume the one queue: its FIFO groups still hand each symbol's alerts
out one at a time and in order, so only different symbols run side by side, and the
`broker_api` pool still lets one order step at a time at the broker. Threads would not
do: an in-process run captures its process's stdout and stderr.

The supervisor starts the workers, restarts one that dies (its alert comes back on the
queue once its claim times out, and is run again once), and on Ctrl-C or SIGTERM stops
them all after the alert in hand.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable

RESTART_PAUSE_SECONDS = 1.0


def _create_storage() -> None:
    """Open DAGSTER_HOME's instance once, so its storage exists before N workers open it at
    the same moment (on a fresh SQLite instance they raced to create the tables: "table
    runs already exists", and one worker died)."""
    from trading_assets import settings

    if settings.dagster_home():
        import dagster as dg

        with dg.DagsterInstance.get():
            pass


def supervise(processes: int, note: Callable[[str], None]) -> int:
    """Run `processes` workers until stopped (Ctrl-C or SIGTERM raise in this process);
    0 after a clean stop."""
    argv = [sys.executable, "-m", "trading_assets", "worker"]
    _create_storage()
    children: list[subprocess.Popen] = [subprocess.Popen(argv) for _ in range(processes)]
    note(f"alert workers: {processes} processes ({', '.join(str(c.pid) for c in children)})")
    try:
        while True:
            for i, child in enumerate(children):
                code = child.poll()
                if code is None:
                    continue
                how = f"signal {-code}" if code < 0 else f"exit {code}"
                note(f"alert worker {child.pid} ended ({how}); starting another")
                time.sleep(RESTART_PAUSE_SECONDS)  # a worker that cannot start does not spin
                children[i] = subprocess.Popen(argv)
            time.sleep(0.2)
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 0
