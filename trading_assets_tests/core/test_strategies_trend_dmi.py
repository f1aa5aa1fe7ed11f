"""The trend_dmi state machine and its TradingView alert parser."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading_assets.adapters.tradingview.alerts import parse_tradingview_alert
from trading_assets.core.ports import Side
from trading_assets.core.strategies.trend_dmi import (
    Action,
    CrossDirection,
    DICross,
    Outcome,
    PositionState,
    TrendColor,
    TrendFlip,
    TrendState,
    apply,
)

T0 = datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
SYM = "MNQ"
BLUE, RED = TrendColor.BLUE, TrendColor.RED
UP, DOWN = CrossDirection.PLUS_OVER_MINUS, CrossDirection.MINUS_OVER_PLUS


def flip(color: TrendColor, minute: int) -> TrendFlip:
    return TrendFlip(SYM, color, T0 + timedelta(minutes=minute))


def cross(direction: CrossDirection, minute: int) -> DICross:
    return DICross(SYM, direction, T0 + timedelta(minutes=minute))


def run(events, state: TrendState | None = None):
    state = state or TrendState(SYM)
    out = []
    for event in events:
        t = apply(state, event)
        out.append(t)
        state = t.state
    return state, out


# ----------------------------------------------------------------------------- truth table


def test_blue_flip_from_nothing_opens_long():
    state, [t] = run([flip(BLUE, 0)])
    assert t.outcome is Outcome.APPLIED
    assert t.actions == (Action.OPEN_LONG,)
    assert (state.position, state.trend_color, state.waiting_for_reentry) == (
        PositionState.LONG, BLUE, False,
    )


def test_red_flip_while_long_closes_then_opens_short():
    state, ts = run([flip(BLUE, 0), flip(RED, 10)])
    assert ts[-1].actions == (Action.CLOSE_LONG, Action.OPEN_SHORT)
    assert state.position is PositionState.SHORT and state.trend_color is RED


def test_full_seed_cycle_exit_wait_reenter():
    """Long on BLUE, DI- over DI+ exits and waits, DI+ over DI- re-enters long."""
    state, ts = run([flip(BLUE, 0), cross(DOWN, 15), cross(UP, 30)])
    assert [t.actions for t in ts] == [
        (Action.OPEN_LONG,), (Action.CLOSE_LONG,), (Action.OPEN_LONG,),
    ]
    assert ts[1].state.waiting_for_reentry is True
    assert ts[1].state.position is PositionState.NONE
    assert state.position is PositionState.LONG and state.waiting_for_reentry is False


def test_short_side_mirror():
    state, ts = run([flip(RED, 0), cross(UP, 15), cross(DOWN, 30)])
    assert [t.actions for t in ts] == [
        (Action.OPEN_SHORT,), (Action.CLOSE_SHORT,), (Action.OPEN_SHORT,),
    ]
    assert state.position is PositionState.SHORT


def test_cross_against_trend_while_waiting_does_not_reenter():
    # Long exited; DI- crossing above DI+ again (bearish) must not open a long, nor a short.
    events = [flip(BLUE, 0), cross(DOWN, 15), cross(UP, 30), cross(DOWN, 45), cross(DOWN, 60)]
    state, ts = run(events)
    assert ts[-1].outcome is Outcome.IGNORED and ts[-1].actions == ()
    assert state.position is PositionState.NONE and state.waiting_for_reentry is True


def test_flip_while_waiting_enters_new_direction_and_clears_wait():
    state, ts = run([flip(BLUE, 0), cross(DOWN, 15), flip(RED, 20)])
    assert ts[-1].actions == (Action.OPEN_SHORT,)  # nothing to close: already flat
    assert state.position is PositionState.SHORT and state.waiting_for_reentry is False


def test_cross_agreeing_with_position_is_ignored_but_advances_time():
    state, ts = run([flip(BLUE, 0), cross(UP, 15)])
    assert ts[-1].outcome is Outcome.IGNORED and ts[-1].actions == ()
    assert state.position is PositionState.LONG
    assert state.last_event_at == T0 + timedelta(minutes=15)


def test_cross_before_any_trend_does_nothing():
    state, [t] = run([cross(UP, 0)])
    assert t.actions == () and state.position is PositionState.NONE
    assert state.waiting_for_reentry is False


def test_stand_aside_state_ignores_crosses_until_next_flip():
    aside = TrendState(SYM, PositionState.NONE, BLUE, False, T0)
    _, ts = run([cross(UP, 5), cross(DOWN, 10), flip(RED, 15)], aside)
    assert [t.actions for t in ts] == [(), (), (Action.OPEN_SHORT,)]


# ----------------------------------------------------------------------------- rejections


def test_flip_to_colour_in_force_is_rejected_unchanged():
    _, ts = run([flip(BLUE, 0), flip(BLUE, 10)])
    t = ts[-1]
    assert t.rejected and t.actions == () and "already BLUE" in t.reason
    assert t.state == ts[0].state  # last_event_at not advanced either


@pytest.mark.parametrize("minute", [-5, 0])
def test_stale_or_same_time_event_is_rejected(minute):
    state, ts = run([flip(BLUE, 0), cross(DOWN, minute)])
    t = ts[-1]
    assert t.rejected and "stale" in t.reason
    assert state.position is PositionState.LONG  # the stale exit did not happen


def test_too_old_event_is_rejected_when_max_age_given():
    event = flip(BLUE, 0)
    max_age = timedelta(minutes=5)
    late = apply(TrendState(SYM), event, now=event.at + timedelta(hours=2), max_age=max_age)
    assert late.rejected and "too old" in late.reason
    fresh = apply(TrendState(SYM), event, now=event.at + timedelta(seconds=3), max_age=max_age)
    assert fresh.actions == (Action.OPEN_LONG,)


def test_event_from_the_future_is_rejected_so_it_cannot_block_real_ones():
    now = T0
    future = apply(TrendState(SYM), flip(BLUE, 60), now=now)
    assert future.rejected and "impossible" in future.reason
    assert future.state.last_event_at is None
    assert not apply(TrendState(SYM), TrendFlip(SYM, BLUE, now + timedelta(seconds=30)), now=now).rejected


def test_event_for_another_symbol_is_a_caller_bug():
    with pytest.raises(ValueError, match="applied to the state of"):
        apply(TrendState("ES"), flip(BLUE, 0))


# ----------------------------------------------------------------------------- state


def test_state_round_trips_through_json():
    state, _ = run([flip(BLUE, 0), cross(DOWN, 15)])
    stored = json.dumps(state.to_dict())
    assert TrendState.from_dict(json.loads(stored)) == state
    tied = TrendState(SYM, PositionState.LONG, BLUE, False, T0, ("x", "y"))
    assert TrendState.from_dict(json.loads(json.dumps(tied.to_dict()))) == tied


# ----------------------------------------------------------------------------- same-second ties


def test_flip_and_cross_in_the_same_second_both_apply_in_arrival_order():
    """The 10- and 15-minute bars close together; dropping the second alert would leave
    a LONG under a RED trend. With ids, both apply."""
    long_blue, _ = run([flip(BLUE, 0)])
    t = T0 + timedelta(minutes=30)
    state, ts = run(
        [DICross(SYM, UP, t, event_id="cross-1"), TrendFlip(SYM, RED, t, event_id="flip-1")],
        long_blue,
    )
    assert [x.outcome for x in ts] == [Outcome.IGNORED, Outcome.APPLIED]
    assert ts[1].actions == (Action.CLOSE_LONG, Action.OPEN_SHORT)
    assert state.position is PositionState.SHORT and state.trend_color is RED
    assert state.last_event_ids == ("cross-1", "flip-1")


def test_same_id_at_the_same_time_is_a_duplicate():
    t = T0 + timedelta(minutes=15)
    state, ts = run([flip(BLUE, 0), DICross(SYM, DOWN, t, event_id="c"),
                     DICross(SYM, DOWN, t, event_id="c")])
    assert ts[-1].rejected and "duplicate" in ts[-1].reason
    assert state.position is PositionState.NONE and state.waiting_for_reentry


def test_ids_at_an_earlier_time_are_forgotten_once_time_moves_on():
    state, _ = run([TrendFlip(SYM, BLUE, T0, event_id="a"),
                    DICross(SYM, DOWN, T0 + timedelta(minutes=1), event_id="b")])
    assert state.last_event_ids == ("b",)


@pytest.mark.parametrize(
    "data",
    [
        {"symbol": SYM, "position": "LONG", "trend_color": "RED"},
        {"symbol": SYM, "position": "SHORT", "trend_color": None},
        {"symbol": SYM, "position": "LONG", "trend_color": "BLUE", "waiting_for_reentry": True},
        {"symbol": SYM, "position": "NONE", "trend_color": None, "waiting_for_reentry": True},
        {"symbol": SYM, "position": "FLAT"},
        {"symbol": SYM, "waiting_for_reentry": "YES"},
        {"symbol": SYM, "last_event_at": "2025-03-03T15:00:00"},
        {"symbol": SYM, "last_event_at": 1741014000},
        {"symbol": SYM, "last_event_ids": ["a"]},  # ids without a time
        {"position": "NONE"},
    ],
)
def test_corrupted_stored_state_fails_loudly(data):
    with pytest.raises(ValueError):
        TrendState.from_dict(data)


def test_action_sides_and_legs():
    assert [a.side for a in Action] == [Side.SELL, Side.BUY, Side.BUY, Side.SELL]
    assert len({a.leg for a in Action}) == 4


# ----------------------------------------------------------------------------- properties

event_specs = st.lists(
    st.tuples(
        st.sampled_from(["flip_blue", "flip_red", "up", "down"]),
        st.integers(min_value=-3, max_value=20),  # minutes after the previous event; <0 is stale
        st.sampled_from([None, "a", "b", "c"]),  # event id; a small pool makes duplicates
    ),
    max_size=30,
)


# Every legal starting state, including "flat, colour known, not waiting" (stand aside),
# which only a stored or hand-written state reaches.
start_states = st.sampled_from(
    [
        TrendState(SYM),
        TrendState(SYM, PositionState.LONG, BLUE),
        TrendState(SYM, PositionState.SHORT, RED),
        TrendState(SYM, PositionState.NONE, BLUE, True),
        TrendState(SYM, PositionState.NONE, RED, True),
        TrendState(SYM, PositionState.NONE, BLUE, False),
        TrendState(SYM, PositionState.NONE, RED, False),
    ]
)
HELD = {PositionState.NONE: 0, PositionState.LONG: 1, PositionState.SHORT: -1}


def build_events(specs):
    at = T0
    events = []
    for kind, step, event_id in specs:
        at = at + timedelta(minutes=step)
        if kind.startswith("flip"):
            color = BLUE if kind == "flip_blue" else RED
            events.append(TrendFlip(SYM, color, at, event_id=event_id))
        else:
            events.append(DICross(SYM, UP if kind == "up" else DOWN, at, event_id=event_id))
    return events


@settings(max_examples=150, deadline=None)
@given(start_states, event_specs)
def test_never_both_long_and_short_and_actions_track_the_position(state, specs):
    """Replaying the actions on a broker-side position gives the state's position, and
    that position is always -1, 0 or +1: never long and short at once, never doubled."""
    held = HELD[state.position]
    for event in build_events(specs):
        t = apply(state, event)
        for action in t.actions:
            if action is Action.CLOSE_LONG:
                assert held == 1
                held = 0
            elif action is Action.CLOSE_SHORT:
                assert held == -1
                held = 0
            else:
                assert held == 0, "opened while still holding a position"
                held = 1 if action is Action.OPEN_LONG else -1
        state = t.state
        assert held == HELD[state.position]


@settings(max_examples=150, deadline=None)
@given(start_states, event_specs)
def test_di_cross_opens_only_while_waiting_and_in_the_trend_direction(state, specs):
    for event in build_events(specs):
        t = apply(state, event)
        opens = [a for a in t.actions if a.opens]
        if isinstance(event, DICross) and opens:
            assert state.waiting_for_reentry, "re-entered without waiting for re-entry"
            expected = Action.OPEN_LONG if state.trend_color is BLUE else Action.OPEN_SHORT
            assert opens == [expected]
            assert t.state.waiting_for_reentry is False
        state = t.state


@settings(max_examples=150, deadline=None)
@given(start_states, event_specs)
def test_stale_events_are_rejected_and_change_nothing(state, specs):
    """Older than the last applied event, or at the same time without a new event id:
    rejected, state untouched. Anything applied moves the clock to the event's time."""
    for event in build_events(specs):
        before = copy.deepcopy(state)
        t = apply(state, event)
        last = state.last_event_at
        if last is not None and (
            event.at < last
            or (event.at == last and (event.event_id is None or event.event_id in state.last_event_ids))
        ):
            assert t.rejected and t.state == before and t.actions == ()
        if not t.rejected:
            assert t.state.last_event_at == event.at
        state = t.state


@settings(max_examples=150, deadline=None)
@given(start_states, event_specs)
def test_redelivering_an_applied_event_does_nothing(state, specs):
    for event in build_events(specs):
        t = apply(state, event)
        if not t.rejected:
            again = apply(t.state, event)
            assert again.rejected and again.actions == () and again.state == t.state
        state = t.state


# ----------------------------------------------------------------------------- alerts


def seed_alert(action: str = "LONG_ENTRY") -> dict:
    """The seed-001 Trend Validator alert, as TradingView fills it in."""
    direction, trigger = {
        "LONG_ENTRY": ("LONG", "COLOR_CHANGE_BLUE"),
        "SHORT_ENTRY": ("SHORT", "COLOR_CHANGE_RED"),
    }[action]
    return {
        "action": action,
        "indicator": "Trend_Validator",
        "signal": {"type": "ENTRY", "direction": direction, "trigger": trigger},
        "market_data": {
            "symbol": "MNQH2025",
            "exchange": "CME_MINI",
            "timeframe": "10",
            "timestamp": "2025-03-03T15:00:00Z",
            "timenow": "2025-03-03T15:10:01Z",
        },
        "price_data": {
            "open": "21000.25", "high": "21010.5", "low": "20990", "close": "21005.75",
            "volume": "1534",
        },
    }


def di_alert(direction: str = "MINUS_OVER_PLUS") -> dict:
    alert = seed_alert()
    alert["action"] = "DI_CROSS"
    alert["indicator"] = "DMI"
    trigger = {"PLUS_OVER_MINUS": "DI_PLUS_CROSS_ABOVE", "MINUS_OVER_PLUS": "DI_MINUS_CROSS_ABOVE"}
    alert["signal"] = {"type": "DI_CROSS", "direction": direction, "trigger": trigger[direction]}
    alert["market_data"]["timeframe"] = "15"
    return alert


def test_parse_seed_long_entry():
    event = parse_tradingview_alert(seed_alert("LONG_ENTRY"))
    assert isinstance(event, TrendFlip)
    assert event.color is BLUE and event.symbol == "MNQH2025"
    assert event.at == datetime(2025, 3, 3, 15, 10, 1, tzinfo=UTC)  # ordered by fire time
    assert event.bar_time == datetime(2025, 3, 3, 15, 0, tzinfo=UTC)
    assert event.price == 21005.75


def test_parse_seed_short_entry_and_di_cross():
    assert parse_tradingview_alert(seed_alert("SHORT_ENTRY")).color is RED
    event = parse_tradingview_alert(di_alert("PLUS_OVER_MINUS"))
    assert isinstance(event, DICross) and event.direction is UP


def test_extra_keys_are_tolerated():
    alert = seed_alert()
    alert["passphrase"] = "secret"
    assert isinstance(parse_tradingview_alert(alert), TrendFlip)


def test_event_id_is_the_alert_content_or_the_callers_id():
    alert = seed_alert()
    with_pass = {**alert, "passphrase": "secret"}
    a = parse_tradingview_alert(alert)
    assert a.event_id == parse_tradingview_alert(with_pass).event_id  # passphrase aside
    later = _break(alert, "market_data.timenow", "2025-03-03T15:20:01Z")
    assert parse_tradingview_alert(later).event_id != a.event_id
    assert parse_tradingview_alert(alert, event_id="alert-42").event_id == "alert-42"


def _break(alert: dict, path: str, value) -> dict:
    alert = copy.deepcopy(alert)
    *parents, key = path.split(".")
    node = alert
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[key]
    else:
        node[key] = value
    return alert


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("indicator", "MACD", "indicator"),
        ("action", "BUY", "action"),
        ("signal", KeyError, "signal"),
        ("signal.trigger", "COLOR_CHANGE_RED", "signal.trigger"),  # contradicts LONG_ENTRY
        ("signal.direction", "SHORT", "signal.direction"),
        ("market_data.symbol", "", "market_data.symbol"),
        ("market_data.symbol", "{{ticker}}", "market_data.symbol"),
        ("market_data.timenow", "yesterday", "market_data.timenow"),
        ("market_data.timenow", "2025-03-03T15:10:01", "market_data.timenow"),  # naive
        ("market_data.timestamp", KeyError, "market_data.timestamp"),
        ("price_data.close", "{{close}}", "price_data.close"),
        ("price_data.close", "abc", "price_data.close"),
        ("price_data.close", "-1", "price_data.close"),
        ("price_data.high", "20000", "price_data.high"),
        ("price_data.volume", "nan", "price_data.volume"),
        ("action", ["LONG_ENTRY"], "action"),  # unhashable: was a TypeError
        ("signal.type", {"ENTRY": 1}, "signal.type"),
        ("price_data.close", 10**400, "price_data.close"),  # beyond any float: was an OverflowError
    ],
)
def test_bad_trend_alert_names_the_field(path, value, named):
    with pytest.raises(ValueError, match=f"^{named}"):
        parse_tradingview_alert(_break(seed_alert(), path, value))


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        ("action", "LONG_ENTRY", "action"),
        ("signal.type", "ENTRY", "signal.type"),
        ("signal.direction", "UP", "signal.direction"),
        ("signal.trigger", "DI_PLUS_CROSS_ABOVE", "signal.trigger"),  # contradicts MINUS_OVER_PLUS
    ],
)
def test_bad_di_alert_names_the_field(path, value, named):
    with pytest.raises(ValueError, match=f"^{named}"):
        parse_tradingview_alert(_break(di_alert("MINUS_OVER_PLUS"), path, value))


def test_non_object_alert_is_rejected():
    with pytest.raises(ValueError, match="JSON object"):
        parse_tradingview_alert(["LONG_ENTRY"])  # type: ignore[arg-type]


def test_parsed_alerts_drive_the_machine():
    """Alert JSON -> events -> actions, the path the webhook sensor takes."""
    entry = parse_tradingview_alert(seed_alert("LONG_ENTRY"))
    exit_alert = di_alert("MINUS_OVER_PLUS")
    exit_alert["market_data"]["timenow"] = "2025-03-03T15:15:02Z"
    state = TrendState(entry.symbol)
    first = apply(state, entry)
    second = apply(first.state, parse_tradingview_alert(exit_alert))
    redelivered = apply(second.state, parse_tradingview_alert(exit_alert))
    assert first.actions == (Action.OPEN_LONG,)
    assert second.actions == (Action.CLOSE_LONG,)
    assert redelivered.rejected and redelivered.actions == ()
