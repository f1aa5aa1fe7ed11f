"""`python -m trading_assets stream`: the price stream into 1-minute bars (knn_shadow).

Subscribes to the configured epics (`TRADING_KNN_EPICS`) on a `PriceStream`: IG's
Lightstreamer in `TRADING_ENV=aws` or with `TRADING_STREAM=ig`, the replay stream
(adapters/stream/replay.py) otherwise. Ticks arrive on the stream's thread and are
queued; this loop takes them, stores them raw, builds minute bars (core/minute_bars.py)
and stores each closed bar once (adapters/stream/store.py, under
`<TRADING_DATA_DIR>/stream`, one SQLite file per UTC day), with a heartbeat.

- A minute closes on the next minute's tick or when the stream's clock (the wall clock
  for IG, the replay clock offline) passes its end + grace.
- One progress line per closed minute: bars written, ticks, gaps, drops, reconnects.
- Silent for `silence` seconds (no tick at all), refused, or dropped by the server
  (status DISCONNECTED): the stream is stopped and opened anew, after a backoff that
  doubles from `backoff` to `max_backoff` (reset by the next tick). The minute builder
  lives across reconnects: ticks resent on reconnect are duplicates, older ones are late,
  and the minutes of the outage have no bar (a gap stays a gap, nothing is invented).
- `stop` (SIGTERM / Ctrl-C in the CLI) ends the loop: the queued ticks and the bars they
  close are written, the connection is recorded as stopped. The minute still open is not
  a bar (it is incomplete); its ticks are in the tick table.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from trading_assets.adapters.ig.streaming import PriceStream, Tick
from trading_assets.adapters.stream.store import StreamStore
from trading_assets.core.minute_bars import MINUTE, MinuteBar, MinuteBarBuilder

logger = logging.getLogger(__name__)

Note = Callable[[str], None]


@dataclass
class ConsumerStats:
    ticks: int = 0
    ticks_stored: int = 0
    bars_written: int = 0
    gaps: int = 0  # missing minutes between consecutive bars of an epic
    connects: int = 0
    reconnects: int = 0
    minutes: int = 0
    last_bar: dict[str, datetime] = field(default_factory=dict)


def _default_note(line: str) -> None:
    logger.info(line)


def run_consumer(
    make_stream: Callable[[], PriceStream],
    epics: Sequence[str],
    store: StreamStore,
    *,
    clock: Callable[[], datetime] | None = None,
    stop: threading.Event | None = None,
    minutes: int | None = None,
    silence: float = 30.0,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    grace: timedelta = timedelta(seconds=2),
    note: Note = _default_note,
    source: str = "stream",
) -> ConsumerStats:
    """Consume until `stop` is set or, with `minutes`, until the stream's clock has passed
    that many minutes after the first tick's minute (their bars closed and written).

    `make_stream` builds a fresh stream for each (re)connect; `clock` defaults to the
    stream's own `now()` if it has one (replay), else the wall clock."""
    stop = stop or threading.Event()
    builder = MinuteBarBuilder(grace=grace)
    stats = ConsumerStats()
    inbox: queue.Queue[Tick] = queue.Queue()
    wait = backoff
    end_at: datetime | None = None
    minute_ticks = 0

    def write(bars: list[MinuteBar]) -> None:
        """Store closed bars; one progress line per minute they close."""
        nonlocal minute_ticks
        if not bars:
            return
        new = store.write_bars(bars)
        stats.bars_written += len(new)
        for minute in sorted({b.minute for b in bars}):
            closing = [b for b in bars if b.minute == minute]
            written = [b for b in new if b.minute == minute]
            gap_text = []
            for b in written:
                prev = stats.last_bar.get(b.epic)
                if prev is not None and b.minute > prev + MINUTE:
                    missing = int((b.minute - prev) / MINUTE) - 1
                    stats.gaps += missing
                    gap_text.append(f"{b.epic} {missing} min after {prev:%H:%M}")
                if prev is None or b.minute > prev:
                    stats.last_bar[b.epic] = b.minute
            stats.minutes += 1
            closes = ", ".join(f"{b.epic} {b.close:.5f} ({b.ticks} ticks)" for b in closing)
            s = builder.stats
            note(f"stream {minute:%Y-%m-%d %H:%M} UTC: {closes}; bars written {len(written)} "
                 f"(total {stats.bars_written}), ticks received {minute_ticks} (total {stats.ticks}), gaps "
                 f"{'; '.join(gap_text) or 'none'} (total {stats.gaps} min), dropped {s.duplicates} duplicate "
                 f"{s.late} late, reconnects {stats.reconnects}")
            minute_ticks = 0

    def drain(stream: PriceStream | None, block: float) -> None:
        nonlocal minute_ticks, end_at
        batch: list[Tick] = []
        try:
            batch.append(inbox.get(timeout=block) if block > 0 else inbox.get_nowait())
            while len(batch) < 10_000:
                batch.append(inbox.get_nowait())
        except queue.Empty:
            pass
        if batch:
            stats.ticks += len(batch)
            minute_ticks += len(batch)
            stats.ticks_stored += store.write_ticks(batch)
            newest: dict[str, datetime] = {}
            closed: list[MinuteBar] = []
            for tick in batch:
                closed.extend(builder.add(tick))
                newest[tick.epic] = max(tick.timestamp, newest.get(tick.epic, tick.timestamp))
            store.beat(newest)
            if minutes is not None and end_at is None:
                end_at = min(t.timestamp for t in batch).replace(second=0, microsecond=0) + minutes * MINUTE
            write(closed)
        now = now_of(stream)
        write(builder.close_due(now))

    def now_of(stream: Any) -> datetime:
        if clock is not None:
            return clock()
        if stream is not None and hasattr(stream, "now"):
            return stream.now()
        return datetime.now(UTC)

    def done(stream: Any) -> bool:
        return stop.is_set() or (end_at is not None and now_of(stream) >= end_at + grace)

    while not done(None):
        stream = make_stream()
        try:
            stream.subscribe(list(epics), inbox.put)
        except Exception as exc:  # refused, unreachable: try again later
            reason = " ".join(str(exc).split()) or type(exc).__name__
            store.record_connection("disconnected", reason=f"connect failed: {reason}")
            note(f"stream: cannot connect ({reason}); again in {wait:.1f} s")
            _safe_stop(stream)
            if stop.wait(wait):
                break
            wait = min(wait * 2, max_backoff)
            continue
        stats.connects += 1
        if stats.connects > 1:
            stats.reconnects += 1
        store.record_connection("connected", source=source)
        note(f"stream: connected ({source}) to {', '.join(epics)}"
             + (f" (reconnect {stats.reconnects})" if stats.reconnects else ""))
        heard = time.monotonic()
        why = "stopped"
        while True:
            before = stats.ticks
            drain(stream, 0.2)
            if stats.ticks > before:
                heard, wait = time.monotonic(), backoff
            if done(stream):
                break
            status = str(getattr(stream, "status", "CONNECTED"))
            if status == "ENDED" and inbox.empty():
                why = "the replay reached the end of its day"
                stop.set()
                break
            if status.startswith("DISCONNECTED") and time.monotonic() - heard > min(silence, 5.0):
                why = f"dropped (status {status})"
                break
            if time.monotonic() - heard > silence:
                why = f"silent for {silence:.0f} s"
                break
        _safe_stop(stream)
        drain(stream, 0)  # what arrived before the stop
        while not inbox.empty():
            drain(stream, 0)
        store.record_connection("stopped" if done(stream) else "disconnected", reason=why)
        if done(stream):
            note(f"stream: {why}")
            break
        note(f"stream: {why}; reconnecting in {wait:.1f} s")
        if stop.wait(wait):
            break
        wait = min(wait * 2, max_backoff)
    s = builder.stats
    note(f"stream: done: {stats.bars_written} bars written, {stats.ticks} ticks ({stats.ticks_stored} new stored), "
         f"gaps {stats.gaps} min, dropped {s.duplicates} duplicate {s.late} late {s.unpriced} unpriced, "
         f"reconnects {stats.reconnects}; open minute not written: "
         f"{', '.join(f'{b.epic} {b.minute:%H:%M}' for b in builder.open_bars()) or 'none'}")
    return stats


def _safe_stop(stream: Any) -> None:
    try:
        stream.stop()
    except Exception:
        logger.exception("stopping the price stream failed")


# ----------------------------------------------------------------------------- CLI


def _ig_stream_factory(env: str) -> Callable[[], PriceStream]:
    from trading_assets import settings
    from trading_assets.adapters.ig.broker import IGConnection
    from trading_assets.adapters.ig.streaming import IGPriceStream

    names = ("IG_USERNAME", "IG_PASSWORD", "IG_API_KEY")
    if env == "aws":
        from trading_assets.adapters.aws.secrets import SecretsManagerSecrets

        aws = settings.aws()
        secrets = SecretsManagerSecrets(aws.region, aws.secret_id)
        values = [secrets.get(n) for n in names]
    else:
        values = [settings.env_str(n) for n in names]
        missing = [n for n, v in zip(names, values, strict=True) if not v]
        if missing:
            raise ValueError(f"TRADING_STREAM=ig needs {', '.join(missing)} (an IG demo login)")
    acc_type = settings.env_str("IG_ACC_TYPE", "demo")
    acc_number = settings.env_str("IG_ACC_NUMBER") or None
    base_url = settings.endpoint("IG_BASE_URL")

    def make() -> PriceStream:
        conn = IGConnection(*values, acc_type=acc_type, acc_number=acc_number, base_url=base_url)
        return IGPriceStream(conn)

    return make


class StreamSetupError(Exception):
    """A bad setting or argument: nothing was started."""


def _replay_day(day: date | None, epics: Sequence[str]) -> date:
    """`day`, or the latest day up to today with replay prices (a weekend has none)."""
    from trading_assets.adapters.stream.replay import day_ticks

    if day is not None:
        if not day_ticks(epics, day, 1):
            raise ValueError(f"--day {day}: no replay prices that day (the FX market is closed); pick a weekday")
        return day
    today = datetime.now(UTC).date()
    for back in range(7):
        if day_ticks(epics, today - timedelta(days=back), 1):
            return today - timedelta(days=back)
    raise ValueError(f"no replay prices in the week up to {today}")


def stream_command(day: date | None, speed: float, minutes: int | None, silence: float,
                   stop: threading.Event, note: Note) -> int:
    """What `python -m trading_assets stream` runs; returns the exit code (0 on a clean stop)."""
    from trading_assets import settings

    try:
        if speed <= 0:
            raise ValueError(f"--speed {speed:g}: must be > 0 (1 is real time)")
        env = settings.trading_env()
        epics = settings.knn_epics()
        source = settings.stream_source(env)
        root = Path(settings.data_dir()) / "stream"
        store = StreamStore(root)
        if source == "ig":
            make_stream = _ig_stream_factory(env)
            where = "IG Lightstreamer"
        else:
            from trading_assets.adapters.stream.replay import ReplayPriceStream

            replay_day = _replay_day(day, epics)
            where = f"replay {replay_day} at {speed:g}x"

            def make_stream() -> PriceStream:
                return ReplayPriceStream(replay_day, speed=speed)
    except (ValueError, settings.MissingSetting) as exc:
        raise StreamSetupError(" ".join(str(exc).split())) from None

    note(f"stream: TRADING_ENV={env}, {where}, epics {', '.join(epics)}, storing under {root}"
         + (f", stopping after {minutes} min" if minutes else ""))
    run_consumer(make_stream, epics, store, stop=stop, minutes=minutes, silence=silence, note=note,
                 source=source)
    return 0


def stream_cli(day: date | None, speed: float, minutes: int | None, silence: float, note: Note) -> int:
    """The CLI's entry: SIGTERM and Ctrl-C set the stop event (the loop flushes, exit 0);
    a bad setting or day is one line, exit 2."""
    import signal

    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signo in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signo, lambda signum, _frame: (note(f"stream: {signal.Signals(signum).name}, "
                                                              "stopping after the ticks in hand"), stop.set()))
    try:
        return stream_command(day, speed, minutes, silence, stop, note)
    except StreamSetupError as exc:
        note(f"error: {exc}")
        return 2
