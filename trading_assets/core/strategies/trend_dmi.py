"""The `trend_dmi` flow: Trend Validator colour flips enter, DMI DI+/DI- crosses exit and re-enter.

A per-symbol state machine over TradingView alerts. `apply(state, event)` is pure: it
returns the next state, the actions to take (in order) and why. The Dagster layer loads
the symbol's state, applies one alert, places the actions' orders, and stores the new
state (`TrendState.to_dict` / `from_dict`, plain JSON).

Rules from the seed:
- Trend flip to BLUE: close a short if held, open long. Flip to RED: close a long if
  held, open short. A flip clears waiting-for-re-entry.
- Long exit: DI- crosses above DI+. Short exit: DI+ crosses above DI-. An exit sets
  waiting-for-re-entry.
- Re-entry (only while waiting): DI+ over DI- while the trend is still BLUE re-opens
  long; DI- over DI+ while still RED re-opens short. Re-entry clears waiting.

Choices where the seed is silent:
- The first flip ever seen for a symbol (colour unknown) enters. TradingView only fires
  the alert on a colour change, so the alert itself asserts the change.
- A flip to the colour already in force is impossible (the indicator did not change
  colour; most likely a duplicate or a mis-configured alert): rejected.
- Events are ordered by the time the alert fired (`timenow`), not by the bar time:
  the 10-minute trend and 15-minute DMI bars start at the same times, so bar times tie.
  An event before the last applied event is stale: rejected, state unchanged.
- Ties: `timenow` has one-second resolution and the 10- and 15-minute bars close
  together (e.g. at :30), so a flip and a DI cross can carry the same second. Dropping
  either would be wrong (a dropped flip can leave a LONG under a RED trend), so an event
  at exactly the last applied time is applied in arrival order *if* it has an
  `event_id` not yet applied at that time; the same id again is a duplicate and is
  rejected, and an event without an id at that time is rejected as stale (at <= last).
  `adapters.tradingview.alerts.parse_tradingview_alert` always sets `event_id` (a hash of the alert's content,
  or the id the caller passes, e.g. the gateway's alert id).
- Optional freshness: with `now` and `max_age`, an event older than `max_age` is
  rejected (a trade placed hours after its alert is not the trade the alert meant).
  With `now`, an event more than `MAX_CLOCK_SKEW` (60 s) in the future is impossible and
  rejected: applied, it would make every genuine later alert look stale.
- A DI cross that calls for nothing (a cross in the direction of the open position, a
  cross against the trend while waiting, a cross before any trend is known, a cross
  while flat and not waiting) is *ignored*: accepted, no action, but it does advance
  `last_event_at` because it is a real, in-order event.
- Flat, colour known and not waiting ("stand aside") is a legal state, reachable only
  by writing it (e.g. after a manual flatten); DI crosses are then ignored until the
  next flip.
- State invariants, checked on every construction (so a corrupted stored state fails
  loudly): LONG only with BLUE, SHORT only with RED, waiting only while flat with a
  known colour, timestamps tz-aware.
- The alert JSON (the seed's Trend Validator entries and the DI-cross shape) is parsed
  into these events by `trading_assets.adapters.tradingview.alerts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from trading_assets.core.ports import Side

FLOW = "trend_dmi"
MAX_CLOCK_SKEW = timedelta(seconds=60)  # how far ahead of `now` an alert's time may be


class PositionState(StrEnum):
    NONE = "NONE"
    LONG = "LONG"
    SHORT = "SHORT"


class TrendColor(StrEnum):
    BLUE = "BLUE"
    RED = "RED"


class CrossDirection(StrEnum):
    PLUS_OVER_MINUS = "plus_over_minus"  # DI+ crosses above DI-
    MINUS_OVER_PLUS = "minus_over_plus"  # DI- crosses above DI+


class Action(StrEnum):
    CLOSE_LONG = "CLOSE_LONG"
    CLOSE_SHORT = "CLOSE_SHORT"
    OPEN_LONG = "OPEN_LONG"
    OPEN_SHORT = "OPEN_SHORT"

    @property
    def side(self) -> Side:
        """The order side that carries the action out."""
        return Side.BUY if self in (Action.OPEN_LONG, Action.CLOSE_SHORT) else Side.SELL

    @property
    def leg(self) -> str:
        """Unique within one transition: usable in a client order id."""
        return self.value.lower()

    @property
    def opens(self) -> bool:
        return self in (Action.OPEN_LONG, Action.OPEN_SHORT)


class Outcome(StrEnum):
    APPLIED = "applied"  # state changed, maybe with actions
    IGNORED = "ignored"  # valid, in order, calls for nothing (last_event_at advances)
    REJECTED = "rejected"  # stale or impossible: state unchanged


def _require_aware(value: datetime | None, name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise ValueError(f"{name} must be timezone-aware, got naive {value.isoformat()}")


@dataclass(frozen=True)
class TrendFlip:
    """The Trend Validator turned `color` (alert fired at `at`)."""

    symbol: str
    color: TrendColor
    at: datetime
    price: float | None = None
    bar_time: datetime | None = None
    timeframe: str | None = None
    exchange: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "color", TrendColor(self.color))
        _require_aware(self.at, "TrendFlip.at")
        _require_aware(self.bar_time, "TrendFlip.bar_time")


@dataclass(frozen=True)
class DICross:
    """DI+ and DI- crossed (`direction`), alert fired at `at`."""

    symbol: str
    direction: CrossDirection
    at: datetime
    price: float | None = None
    bar_time: datetime | None = None
    timeframe: str | None = None
    exchange: str | None = None
    event_id: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", CrossDirection(self.direction))
        _require_aware(self.at, "DICross.at")
        _require_aware(self.bar_time, "DICross.bar_time")


Event = TrendFlip | DICross


@dataclass(frozen=True)
class TrendState:
    """Everything the machine remembers about one symbol; JSON-serialisable."""

    symbol: str
    position: PositionState = PositionState.NONE
    trend_color: TrendColor | None = None
    waiting_for_reentry: bool = False
    last_event_at: datetime | None = None
    # ids of the events applied at exactly `last_event_at` (to tell ties from duplicates)
    last_event_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", PositionState(self.position))
        object.__setattr__(self, "last_event_ids", tuple(self.last_event_ids))
        if self.last_event_ids and self.last_event_at is None:
            raise ValueError(f"{self.symbol}: last_event_ids without last_event_at")
        if self.trend_color is not None:
            object.__setattr__(self, "trend_color", TrendColor(self.trend_color))
        _require_aware(self.last_event_at, "TrendState.last_event_at")
        if self.position is PositionState.LONG and self.trend_color is not TrendColor.BLUE:
            raise ValueError(f"{self.symbol}: LONG requires trend BLUE, got {self.trend_color}")
        if self.position is PositionState.SHORT and self.trend_color is not TrendColor.RED:
            raise ValueError(f"{self.symbol}: SHORT requires trend RED, got {self.trend_color}")
        if self.waiting_for_reentry and (
            self.position is not PositionState.NONE or self.trend_color is None
        ):
            raise ValueError(
                f"{self.symbol}: waiting_for_reentry requires a flat position and a known "
                f"trend colour (position={self.position}, trend={self.trend_color})"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; the seed's field meanings, ISO-8601 timestamps."""
        return {
            "symbol": self.symbol,
            "position": self.position.value,
            "trend_color": None if self.trend_color is None else self.trend_color.value,
            "waiting_for_reentry": self.waiting_for_reentry,
            "last_event_at": None if self.last_event_at is None else self.last_event_at.isoformat(),
            "last_event_ids": list(self.last_event_ids),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrendState:
        """Inverse of `to_dict`; raises ValueError on anything that is not a legal state."""
        if not isinstance(data, Mapping) or not isinstance(data.get("symbol"), str):
            raise ValueError(f"stored state needs a string 'symbol', got {data!r}")
        last = data.get("last_event_at")
        if last is not None and not isinstance(last, str):
            raise ValueError(f"last_event_at must be an ISO-8601 string, got {last!r}")
        color = data.get("trend_color")
        waiting = data.get("waiting_for_reentry", False)
        if not isinstance(waiting, bool):
            raise ValueError(f"waiting_for_reentry must be a bool, got {waiting!r}")
        ids = data.get("last_event_ids", [])
        if not isinstance(ids, list | tuple) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"last_event_ids must be a list of strings, got {ids!r}")
        return cls(
            symbol=data["symbol"],
            position=PositionState(data.get("position", "NONE")),
            trend_color=None if color is None else TrendColor(color),
            waiting_for_reentry=waiting,
            last_event_at=None if last is None else datetime.fromisoformat(last),
            last_event_ids=tuple(ids),
        )


@dataclass(frozen=True)
class Transition:
    """The result of applying one event: next state, ordered actions, and why."""

    state: TrendState
    outcome: Outcome
    reason: str
    actions: tuple[Action, ...] = field(default_factory=tuple)

    @property
    def rejected(self) -> bool:
        return self.outcome is Outcome.REJECTED


_OPEN_FOR = {TrendColor.BLUE: Action.OPEN_LONG, TrendColor.RED: Action.OPEN_SHORT}
_POSITION_FOR = {TrendColor.BLUE: PositionState.LONG, TrendColor.RED: PositionState.SHORT}
_CLOSE_FOR = {PositionState.LONG: Action.CLOSE_LONG, PositionState.SHORT: Action.CLOSE_SHORT}
# The cross that exits each position, and the colour under which each cross re-enters.
_EXIT_CROSS = {
    PositionState.LONG: CrossDirection.MINUS_OVER_PLUS,
    PositionState.SHORT: CrossDirection.PLUS_OVER_MINUS,
}
_REENTRY_COLOR = {
    CrossDirection.PLUS_OVER_MINUS: TrendColor.BLUE,
    CrossDirection.MINUS_OVER_PLUS: TrendColor.RED,
}


def apply(
    state: TrendState,
    event: Event,
    *,
    now: datetime | None = None,
    max_age: timedelta | None = None,
) -> Transition:
    """Advance `state` by one event. Pure: same inputs, same transition.

    Raises ValueError only for caller bugs (event for another symbol); everything an
    alert can get wrong comes back as a REJECTED transition with the state unchanged.
    """
    if event.symbol != state.symbol:
        raise ValueError(f"event for {event.symbol!r} applied to the state of {state.symbol!r}")
    _require_aware(now, "now")

    def reject(why: str) -> Transition:
        return Transition(state, Outcome.REJECTED, why)

    last = state.last_event_at
    if last is not None and event.at < last:
        return reject(
            f"stale: event at {event.at.isoformat()} is older than the last applied event "
            f"at {last.isoformat()}"
        )
    if last is not None and event.at == last:
        if event.event_id is None:
            return reject(
                f"stale: event at {event.at.isoformat()} is not after the last applied event "
                "and has no event_id to tell it from a duplicate"
            )
        if event.event_id in state.last_event_ids:
            return reject(f"duplicate: event {event.event_id} was already applied")
    if now is not None and max_age is not None and now - event.at > max_age:
        return reject(
            f"too old: event at {event.at.isoformat()} is more than {max_age} "
            f"before {now.isoformat()}"
        )
    if now is not None and event.at > now + MAX_CLOCK_SKEW:
        # Applying it would make every real event after it "stale" until that time.
        return reject(f"impossible: event at {event.at.isoformat()} is after now ({now.isoformat()})")

    flip = isinstance(event, TrendFlip)
    transition = _apply_flip(state, event, reject) if flip else _apply_cross(state, event)
    if transition.rejected:
        return transition
    ids = state.last_event_ids if last is not None and event.at == last else ()
    if event.event_id is not None:
        ids = (*ids, event.event_id)
    return replace(transition, state=replace(transition.state, last_event_ids=ids))


def _apply_flip(state: TrendState, event: TrendFlip, reject) -> Transition:
    color = event.color
    if state.trend_color is color:
        return reject(f"impossible: trend is already {color}; a flip must change the colour")
    actions: list[Action] = []
    if state.position is not PositionState.NONE:
        actions.append(_CLOSE_FOR[state.position])
    actions.append(_OPEN_FOR[color])
    before = "unknown" if state.trend_color is None else state.trend_color.value
    new = replace(
        state,
        position=_POSITION_FOR[color],
        trend_color=color,
        waiting_for_reentry=False,
        last_event_at=event.at,
    )
    what = " and ".join(a.value for a in actions)
    return Transition(new, Outcome.APPLIED, f"trend {before} -> {color}: {what}", tuple(actions))


def _apply_cross(state: TrendState, event: DICross) -> Transition:
    direction = event.direction
    advanced = replace(state, last_event_at=event.at)

    def ignore(why: str) -> Transition:
        return Transition(advanced, Outcome.IGNORED, why)

    if state.position is not PositionState.NONE:
        if direction is _EXIT_CROSS[state.position]:
            new = replace(advanced, position=PositionState.NONE, waiting_for_reentry=True)
            action = _CLOSE_FOR[state.position]
            return Transition(
                new, Outcome.APPLIED,
                f"{direction} while {state.position}: exit, wait for re-entry", (action,),
            )
        return ignore(f"{direction} agrees with the open {state.position}; hold")
    if state.trend_color is None:
        return ignore(f"{direction} before any trend is known; wait for a trend flip")
    if not state.waiting_for_reentry:
        return ignore(f"{direction} while flat and not waiting for re-entry; wait for a trend flip")
    if _REENTRY_COLOR[direction] is not state.trend_color:
        return ignore(f"{direction} against the {state.trend_color} trend; keep waiting")
    action = _OPEN_FOR[state.trend_color]
    new = replace(
        advanced, position=_POSITION_FOR[state.trend_color], waiting_for_reentry=False
    )
    why = f"{direction} while trend still {state.trend_color}: re-enter"
    return Transition(new, Outcome.APPLIED, why, (action,))
