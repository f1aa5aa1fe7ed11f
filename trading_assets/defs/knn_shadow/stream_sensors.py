"""Noticing a silent or dead price stream: every 60 s, during the FX week, the sensor
reads the stream's heartbeat (adapters/stream/store.py) and tells the notifier once per
silence episode, and once when the stream has recovered. The episode is kept in the
sensor's cursor, so a silence that lasts an hour is one notification, not sixty.

A silence is no tick from any epic for more than `stream_store.silence_minutes` (5),
counted from the market's opening when the week has just begun, or a connection that
has not been "connected" for DOWN_GRACE (a reconnect takes up to the consumer's 60 s
backoff, so a brief drop is not told). Outside FX hours it skips: the market is closed.
"""

import json
from datetime import UTC, datetime, timedelta

import dagster as dg

from trading_assets.adapters.stream.store import Heartbeat
from trading_assets.core import fx_hours
from trading_assets.core.messaging import NotificationKind
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.defs.notifications import tell
from trading_assets.resources.messaging import NotifierResource
from trading_assets.resources.stream import StreamStoreResource

FLOW = knn.FLOW
DOWN_GRACE = timedelta(minutes=2)


def _now() -> datetime:
    return datetime.now(UTC)


def _hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def fx_open_since(now: datetime) -> datetime | None:
    """When the FX market opened for the stretch `now` is in (UTC), None while closed."""
    hour = _hour(now)
    if fx_hours.closed_reason(hour) is not None:
        return None
    for _ in range(24 * 8):
        before = hour - timedelta(hours=1)
        if fx_hours.closed_reason(before) is not None:
            break
        hour = before
    return hour


def describe(beat: Heartbeat, now: datetime) -> str:
    """One line on the heartbeat: connection, newest tick and bar."""
    parts = [f"stream {beat.status}" + (f" ({beat.source})" if beat.source else "")]
    if beat.last_tick_at:
        epic, at = max(beat.last_tick_at.items(), key=lambda kv: kv[1])
        parts.append(f"last tick {(now - at).total_seconds():.0f} s ago ({epic} at {at:%Y-%m-%d %H:%M:%S} UTC)")
    else:
        parts.append("no tick yet")
    if beat.last_bar_minute:
        parts.append(f"last bar {max(beat.last_bar_minute.values()):%Y-%m-%d %H:%M} UTC")
    parts.append(f"{beat.reconnects} reconnects")
    return ", ".join(parts)


def silence(beat: Heartbeat, now: datetime, opened: datetime, silence_minutes: float,
            down_seen_at: datetime | None) -> str | None:
    """What is wrong with the stream now, or None."""
    if beat.status != "connected" and down_seen_at is not None and now - down_seen_at >= DOWN_GRACE:
        why = f": {beat.last_disconnect_reason}" if beat.last_disconnect_reason else ""
        return f"the price stream is {beat.status}{why} (for at least {(now - down_seen_at).total_seconds():.0f} s)"
    last = max(beat.last_tick_at.values()) if beat.last_tick_at else None
    quiet = now - max(last, opened) if last else now - opened
    if quiet > timedelta(minutes=silence_minutes):
        since = f"since {last:%Y-%m-%d %H:%M:%S} UTC" if last else "since the market opened (never a tick)"
        return f"no tick for {quiet.total_seconds() / 60:.1f} minutes ({since}; limit {silence_minutes:g})"
    return None


@dg.sensor(
    name="knn_stream_silence_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="During the FX week, tells once when the price stream (python -m trading_assets stream) sends no "
                "tick for `silence_minutes` (5) or stays disconnected, and once when it recovers; skips when fine "
                "with the heartbeat, and while the market is closed.",
)
def knn_stream_silence_sensor(context: dg.SensorEvaluationContext, stream_store: StreamStoreResource,
                              notifier: NotifierResource) -> dg.SensorResult:
    now = _now()
    state = json.loads(context.cursor) if context.cursor else {}
    beat = stream_store.get().heartbeat()
    line = describe(beat, now)
    opened = fx_open_since(now)
    if opened is None:
        state.pop("down_seen_at", None)
        return dg.SensorResult(skip_reason=f"FX market closed: {fx_hours.closed_reason(_hour(now))} ({line})",
                               cursor=json.dumps(state, sort_keys=True))
    if beat.status == "connected":
        state.pop("down_seen_at", None)
    else:
        state.setdefault("down_seen_at", now.isoformat())
    down_seen_at = datetime.fromisoformat(state["down_seen_at"]) if "down_seen_at" in state else None
    problem = silence(beat, now, opened, stream_store.silence_minutes, down_seen_at)
    episode = state.get("episode")
    details = {"status": beat.status, "source": beat.source, "reconnects": beat.reconnects,
               "last_tick_at": {e: t.isoformat() for e, t in beat.last_tick_at.items()},
               "last_bar_minute": {e: t.isoformat() for e, t in beat.last_bar_minute.items()}}
    if problem and episode is None:
        if tell(context, notifier, NotificationKind.STREAM_SILENT, "knn_shadow price stream is silent",
                f"{problem}\n{line}", flow=FLOW, details=details):
            state["episode"] = {"since": now.isoformat(), "problem": problem}
            skip = f"told: {problem} ({line})"
        else:
            skip = f"could not tell (retried next evaluation): {problem} ({line})"
    elif problem:
        skip = f"still silent, told at {episode['since']}: {problem} ({line})"
    elif episode is not None:
        if tell(context, notifier, NotificationKind.INFO, "knn_shadow price stream recovered",
                f"silent since {episode['since']} ({episode['problem']}); now {line}", flow=FLOW, details=details):
            state.pop("episode")
            skip = f"recovered, told: {line}"
        else:
            skip = f"recovered, could not tell (retried next evaluation): {line}"
    else:
        skip = line
    return dg.SensorResult(skip_reason=skip, cursor=json.dumps(state, sort_keys=True))
