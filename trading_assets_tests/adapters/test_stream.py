"""The price stream into stored 1-minute bars: the real IG streaming client against the
loopback Lightstreamer server (ticks, a disconnect and reconnect), the replay stream, the
store across processes, and `python -m trading_assets stream` as a user runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import trading_ig.stream
from lightstreamer.client import LightstreamerClient as RealLSClient

from trading_assets.adapters.ig.broker import IGConnection
from trading_assets.adapters.ig.streaming import IGPriceStream, PriceStream, Tick
from trading_assets.adapters.replay.market_data import ReplayMarketData
from trading_assets.adapters.stream.replay import ReplayPriceStream, day_ticks
from trading_assets.adapters.stream.store import StreamStore
from trading_assets.core.bars import bar_problems
from trading_assets.core.minute_bars import MinuteBar, minute_bars
from trading_assets.stream_consumer import ConsumerStats, run_consumer
from trading_assets_tests.fakes.ig import FakeIG
from trading_assets_tests.fakes.lightstreamer_outage import OutageLightstreamer

pytestmark = pytest.mark.filterwarnings("ignore:ssl=None is deprecated:DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
EURUSD = "CS.D.EURUSD.MINI.IP"
ITEM = f"CHART:{EURUSD}:TICK"
T0 = datetime(2024, 7, 1, 9, 0, tzinfo=UTC)
DAY = date(2025, 11, 18)  # a Tuesday: the replay FX market is open all day


def wait_for(what: Callable[[], bool], timeout: float = 15.0, why: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {why or what}")
        time.sleep(0.02)


def minutes_of(frame: pd.DataFrame) -> list[str]:
    return [t.strftime("%H:%M") for t in frame.index]


# --------------------------------------------------------------- IG over the fake server


@pytest.fixture
def fake() -> Iterator[FakeIG]:
    server = FakeIG().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lightstreamer(fake: FakeIG, monkeypatch: pytest.MonkeyPatch) -> Iterator[OutageLightstreamer]:
    monkeypatch.setattr(trading_ig.stream, "LightstreamerClient", RealLSClient)
    server = OutageLightstreamer().start()
    fake.lightstreamer_endpoint = server.url
    try:
        yield server
    finally:
        server.restore()
        server.stop()


class Consumer:
    """`run_consumer` on a thread over fresh `IGPriceStream`s, on a clock that never closes
    a minute by itself (so minutes close on ticks, whatever the wall clock says)."""

    def __init__(self, fake: FakeIG, store: StreamStore) -> None:
        self.stop = threading.Event()
        self.lines: list[str] = []
        self.stats: ConsumerStats | None = None

        def make() -> PriceStream:
            conn = IGConnection(fake.username, fake.password, fake.api_key, base_url=fake.base_url, timeout=2.0)
            return IGPriceStream(conn, connect_timeout=1.5)

        def run() -> None:
            self.stats = run_consumer(make, [EURUSD], store, clock=lambda: T0, stop=self.stop, silence=1.0,
                                      backoff=0.2, max_backoff=0.5, note=self.lines.append, source="ig")

        self.thread = threading.Thread(target=run, daemon=True)

    def __enter__(self) -> Consumer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the consumer did not stop"


def push(server: OutageLightstreamer, seconds: float, bid: float, offer: float) -> int:
    utm = int((T0 + timedelta(seconds=seconds)).timestamp() * 1000)
    return server.push(ITEM, {"BID": f"{bid:.5f}", "OFR": f"{offer:.5f}", "UTM": str(utm)})


def test_ig_ticks_become_stored_minute_bars_the_last_price_of_each_minute(
        fake: FakeIG, lightstreamer: OutageLightstreamer, tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    with Consumer(fake, store):
        wait_for(lambda: lightstreamer.subscriptions == 1, why="the subscription")
        push(lightstreamer, 5, 1.08500, 1.08510)
        push(lightstreamer, 30, 1.08600, 1.08610)
        push(lightstreamer, 50, 1.08550, 1.08560)  # the last price of 09:00
        push(lightstreamer, 50, 1.08550, 1.08560)  # a duplicate
        push(lightstreamer, 61, 1.08700, 1.08710)  # 09:01 opens: 09:00 is final
        wait_for(lambda: len(store.bars(T0.date())) == 1, why="the 09:00 bar")
    bars = store.bars(T0.date())
    bar = bars.iloc[0]
    assert minutes_of(bars) == ["09:00"] and bar["symbol"] == EURUSD
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == pytest.approx(
        (1.08505, 1.08605, 1.08505, 1.08555, 3))
    assert len(store.ticks(T0.date())) == 4  # the duplicate is stored once
    beat = store.heartbeat()
    assert beat.last_tick_at[EURUSD] == T0 + timedelta(seconds=61)
    assert beat.last_bar_minute[EURUSD] == T0 and beat.status == "stopped"


def test_a_dropped_stream_reconnects_bars_are_stored_once_and_the_outage_stays_a_gap(
        fake: FakeIG, lightstreamer: OutageLightstreamer, tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    with Consumer(fake, store) as consumer:
        wait_for(lambda: lightstreamer.subscriptions == 1, why="the subscription")
        push(lightstreamer, 10, 1.1000, 1.1002)
        push(lightstreamer, 40, 1.1010, 1.1012)
        push(lightstreamer, 70, 1.1020, 1.1022)  # 09:01, closes 09:00
        wait_for(lambda: minutes_of(store.bars(T0.date())) == ["09:00"], why="the 09:00 bar")

        lightstreamer.drop()  # the server goes away; ticks of 09:02-09:03 reach nobody
        assert push(lightstreamer, 130, 1.2000, 1.2002) == 0
        wait_for(lambda: any("reconnecting" in line for line in consumer.lines), why="the silence noticed")
        time.sleep(0.5)  # at least one refused reconnect
        lightstreamer.restore()
        wait_for(lambda: lightstreamer.subscriptions == 2, why="the new subscription")

        push(lightstreamer, 70, 1.1020, 1.1022)  # the server resends its last tick
        push(lightstreamer, 245, 1.1030, 1.1032)  # 09:04
        push(lightstreamer, 270, 1.1040, 1.1042)
        push(lightstreamer, 301, 1.1050, 1.1052)  # 09:05, closes 09:04
        wait_for(lambda: "09:04" in minutes_of(store.bars(T0.date())), why="the 09:04 bar")
    bars = store.bars(T0.date())
    assert minutes_of(bars) == ["09:00", "09:01", "09:04"]  # no bar for 09:02, 09:03
    assert bar_problems(bars) == []  # no duplicate (symbol, minute)
    assert bars["close"].tolist() == pytest.approx([1.1011, 1.1021, 1.1041])
    assert bars["volume"].tolist() == [2, 1, 2]  # the resent tick is not counted twice
    assert consumer.stats is not None and consumer.stats.reconnects >= 1 and consumer.stats.gaps == 2
    beat = store.heartbeat()
    assert beat.reconnects >= 1 and beat.last_disconnect_at is not None
    assert any("gaps CS.D.EURUSD.MINI.IP 2 min after 09:01" in line for line in consumer.lines)


# --------------------------------------------------------------- the replay stream


def test_the_replay_stream_is_deterministic_and_its_minutes_follow_the_hourly_replay_bars() -> None:
    ticks = day_ticks([EURUSD], DAY)
    assert ticks == day_ticks([EURUSD], DAY)
    bars = minute_bars(ticks)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    hourly = ReplayMarketData(session="fx").get_bars([EURUSD], start, start + timedelta(days=1), "1h")
    assert len(bars) == 60 * len(hourly) == 1440
    last_minutes = bars[bars.index.minute == 59]
    assert last_minutes["close"].to_numpy() == pytest.approx(hourly["close"].to_numpy(), abs=2e-6)
    first_minutes = bars[bars.index.minute == 0]
    assert first_minutes["open"].to_numpy() == pytest.approx(hourly["open"].to_numpy(), rel=5e-4)
    for (hour, row), high, low in zip(hourly.iterrows(), bars["high"].resample("1h").max(),
                                      bars["low"].resample("1h").min(), strict=True):
        span = row["high"] - row["low"]
        assert row["low"] - 0.1 * span <= low and high <= row["high"] + 0.1 * span, hour


def test_the_replay_stream_pushes_its_ticks_in_order_on_its_clock() -> None:
    stream = ReplayPriceStream(DAY, speed=6000)  # 100 replay minutes a second
    got: list[Tick] = []
    assert isinstance(stream, PriceStream)
    stream.subscribe([EURUSD], got.append)
    try:
        wait_for(lambda: len(got) >= 80, timeout=5, why="20 replay minutes")
    finally:
        stream.stop()
    assert got[:80] == day_ticks([EURUSD], DAY)[:80]
    assert stream.now() >= got[79].timestamp


def test_replayed_bars_are_written_once_a_restart_writes_nothing_new(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    first = run_consumer(lambda: ReplayPriceStream(DAY, speed=1200), [EURUSD], store, minutes=5,
                         note=lambda _line: None)
    again = run_consumer(lambda: ReplayPriceStream(DAY, speed=1200), [EURUSD], store, minutes=5,
                         note=lambda _line: None)
    assert (first.bars_written, again.bars_written) == (5, 0)
    stored = store.bars(DAY)
    expected = minute_bars(day_ticks([EURUSD], DAY)).iloc[:5]
    pd.testing.assert_frame_equal(stored, expected)


def test_the_store_keeps_bars_once_and_across_processes(tmp_path: Path) -> None:
    store = StreamStore(tmp_path)
    bar = MinuteBar(EURUSD, T0, 1.1, 1.2, 1.0, 1.15, 7)
    assert store.write_bars([bar]) == [bar]
    assert store.write_bars([bar._replace(close=9.9)]) == []  # the first version stays
    code = ("import sys; from datetime import date; from trading_assets.adapters.stream.store import StreamStore; "
            "f = StreamStore(sys.argv[1]).bars(date(2024, 7, 1)); print(len(f), f['close'].iloc[0])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    assert out[-2:] == ["1", "1.15"]
    assert store.days() == [T0.date()]


# --------------------------------------------------------------- the command


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TRADING_STREAM", "TRADING_KNN_EPICS")}
    return {**env, "TRADING_ENV": "local", "TRADING_DATA_DIR": str(tmp_path)}


def test_stream_command_on_replay_writes_bars_and_exits_0(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "trading_assets", "stream", "--day", DAY.isoformat(), "--speed", "120",
                        "--minutes", "3"], cwd=REPO, env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    bars = StreamStore(tmp_path / "stream").bars(DAY)
    assert minutes_of(bars) == ["00:00", "00:01", "00:02"]
    assert r.stderr.count(f"stream {DAY} 00:0") == 3  # a progress line per minute
    assert StreamStore(tmp_path / "stream").heartbeat().status == "stopped"


def test_sigterm_stops_the_stream_command_with_exit_0_after_writing_its_bars(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "trading_assets", "stream", "--day", DAY.isoformat(),
                             "--speed", "600"], cwd=REPO, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    store = StreamStore(tmp_path / "stream")
    try:
        wait_for(lambda: store.day_path(DAY).exists() and len(store.bars(DAY)) >= 2, timeout=30,
                 why="bars from the running command")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM" in err and "stream: done" in err
    bars = store.bars(DAY)
    assert bar_problems(bars) == []
    assert minutes_of(bars) == [f"{m // 60:02d}:{m % 60:02d}" for m in range(len(bars))]  # no gap, none twice


def test_a_bad_epic_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**_env(tmp_path), "TRADING_KNN_EPICS": "EURUSD"}
    r = subprocess.run([sys.executable, "-m", "trading_assets", "stream", "--once"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "TRADING_KNN_EPICS" in r.stderr
