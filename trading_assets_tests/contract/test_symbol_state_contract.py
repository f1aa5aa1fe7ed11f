"""One contract for every per-symbol state store: SQLite (a temp file) and DynamoDB (a real
moto server, the orders table made by `ensure_tables`). Versions checked on write, each
alert's transition recorded once and atomically with the state, the retry rule (an
identical transition already recorded is this commit, landed: True), history per symbol
and flow, and races: 16 writers at one version have one winner, and writers that reload
and re-apply after a lost race apply every alert exactly once."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import boto3
import pytest

from trading_assets.adapters.sqlite.symbol_state import SqliteSymbolStateStore
from trading_assets.core.strategies import trend_dmi
from trading_assets.core.symbol_state import RecordedTransition, StoredState, SymbolStateStore
from trading_assets_tests.contract.test_ledger_contract import dynamodb_client
from trading_assets_tests.fakes.concurrency import run_threads

FLOW = trend_dmi.FLOW
SYMBOL = "MNQ1!"
AT = datetime(2025, 11, 26, 15, 0, 0, 123456, tzinfo=UTC)
STORES = ("sqlite", "dynamodb")

Factory = Callable[[], SymbolStateStore]


def make_moto_requests_atomic(monkeypatch) -> None:
    """Serialise the in-process moto server's DynamoDB requests, as AWS makes each request
    atomic. moto 5.2.5 does not: a TransactWriteItems snapshots the table (deepcopy), and a
    cancelled one restores that snapshot, erasing a concurrent winner's write (two winners
    at one version, seen in ~1 round in 20 of a 16-thread race), and a GetItem of a
    missing key inserts into the table's defaultdict while a deepcopy iterates it (500,
    "dictionary changed size during iteration"). Requests still interleave, so the stores'
    read-check-write races are real; only each request is atomic."""
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    original = DynamoHandler.call_action

    def atomic(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoHandler, "call_action", atomic)


def dynamodb_factory(aws) -> Factory:
    """Stores over fresh tables; each call a store with its own boto3 client (own
    connection pool, as another process would have), built from one session so the
    models load once. Build them before starting threads (sessions are not thread-safe)."""
    from trading_assets.adapters.aws import clients
    from trading_assets.adapters.aws.dynamodb_ledger import ensure_tables
    from trading_assets.adapters.aws.dynamodb_symbol_state import DynamoDbSymbolStateStore

    ensure_tables(aws.region, aws.transactions_table, aws.equity_table, aws.orders_table,
                  client=dynamodb_client(aws))
    session = boto3.session.Session()

    def make() -> SymbolStateStore:
        own = session.client("dynamodb", region_name=aws.region, config=clients._CONFIG)
        return DynamoDbSymbolStateStore(aws.region, aws.orders_table, client=own)

    return make


@pytest.fixture(params=STORES)
def new_store(request, tmp_path) -> Factory:
    """Makes store instances over one shared backing store (file or table)."""
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite"
        return lambda: SqliteSymbolStateStore(path)
    make_moto_requests_atomic(request.getfixturevalue("monkeypatch"))
    return dynamodb_factory(request.getfixturevalue("aws_env"))


@pytest.fixture
def store(new_store) -> SymbolStateStore:
    return new_store()


def transition(alert_id: str, version_after: int, state: dict | None = None, *, before: dict | None = None,
               symbol: str = SYMBOL, flow: str = FLOW, outcome: str = "applied", reason: str = "trend flip",
               actions: tuple[str, ...] = ("OPEN_LONG",), at: datetime = AT,
               details: dict | None = None) -> RecordedTransition:
    return RecordedTransition(
        flow=flow, alert_id=alert_id, symbol=symbol, outcome=outcome, reason=reason, actions=actions,
        state_before=before, state_after=state if state is not None else {"n": version_after},
        version_after=version_after, recorded_at=at, details=details or {})


def process_alert(store: SymbolStateStore, alert_id: str, *, flow: str = FLOW, symbol: str = SYMBOL,
                  attempts: int = 100, after_first_load: Callable[[], object] | None = None) -> int:
    """What a flow does with one alert: load, apply (here: append the alert id), commit; a
    lost race reloads and re-applies, and an alert already recorded is not applied again.
    Returns how many of its commits were refused."""
    for attempt in range(attempts):
        if store.transition_for(flow, alert_id) is not None:
            return attempt
        current = store.load(flow, symbol)
        if attempt == 0 and after_first_load is not None:
            after_first_load()
        before = None if current.state is None else dict(current.state)
        applied = [] if before is None else list(before["applied"])
        after = {"symbol": symbol, "applied": [*applied, alert_id]}
        t = transition(alert_id, current.version + 1, after, before=before, flow=flow, symbol=symbol,
                       at=datetime.now(UTC))
        if store.commit(current.version, t):
            return attempt
    raise AssertionError(f"{alert_id} was not committed in {attempts} attempts")


# ----------------------------------------------------------------------------- the basics


def test_implements_the_protocol(store):
    assert isinstance(store, SymbolStateStore)


def test_a_symbol_never_stored_is_none_at_version_0(store):
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, None, 0)
    assert store.transition_for(FLOW, "never") is None
    assert list(store.history(FLOW, SYMBOL)) == []


def test_a_commit_at_version_0_stores_the_state_at_version_1(store):
    state = trend_dmi.TrendState(SYMBOL, trend_dmi.PositionState.LONG, trend_dmi.TrendColor.BLUE,
                                 last_event_at=AT, last_event_ids=("a1",)).to_dict()
    assert store.commit(0, transition("a1", 1, state))
    loaded = store.load(FLOW, SYMBOL)
    assert loaded == StoredState(FLOW, SYMBOL, state, 1)
    assert trend_dmi.TrendState.from_dict(loaded.state).position is trend_dmi.PositionState.LONG
    assert store.commit(1, transition("a2", 2, {"n": 2}, before=state))
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, {"n": 2}, 2)


def test_a_stale_expected_version_is_refused_and_writes_nothing(store):
    assert store.commit(0, transition("a1", 1))
    for expected in (0, 2, 7):
        assert not store.commit(expected, transition(f"late-{expected}", expected + 1, {"stale": True}))
        assert store.transition_for(FLOW, f"late-{expected}") is None, "a refused commit recorded its transition"
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, {"n": 1}, 1)
    assert [t.alert_id for t in store.history(FLOW, SYMBOL)] == ["a1"]


def test_a_version_after_that_is_not_expected_plus_one_is_a_caller_bug(store):
    with pytest.raises(ValueError, match="version_after 3, expected 1"):
        store.commit(0, transition("a1", 3))
    with pytest.raises(ValueError, match="expected_version must be an int >= 0"):
        store.commit(-1, transition("a1", 0))
    with pytest.raises(ValueError, match="state_after is not plain JSON"):
        store.commit(0, transition("a1", 1, {"price": float("nan")}))
    assert store.load(FLOW, SYMBOL).version == 0 and store.transition_for(FLOW, "a1") is None


def test_an_alert_is_recorded_once(store):
    first = transition("a1", 1, {"first": True})
    assert store.commit(0, first)
    assert not store.commit(1, transition("a1", 2, {"again": True})), "the same alert applied twice"
    assert not store.commit(1, replace(first, version_after=2)), "the alert re-applied on the new state"
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, {"first": True}, 1)
    assert store.transition_for(FLOW, "a1") == first
    assert len(store.history(FLOW, SYMBOL)) == 1


def test_the_identical_transition_again_is_this_commit_already_landed(store):
    """The retry rule: a commit whose first attempt landed (answer lost, call retried) is
    True for exactly the transition already recorded: every field equal, recorded_at and
    version_after included. Anything else for that alert is False."""
    first = transition("a1", 1, {"n": 1, "m": [1, 2]}, details={"instrument": "MNQZ5"})
    assert store.commit(0, first)
    assert store.commit(0, first), "the retried identical commit is ours"
    assert store.commit(0, replace(first, state_after={"m": (1, 2), "n": 1})), "compared as JSON values"
    assert store.commit(0, replace(first, recorded_at=AT.astimezone(timezone(timedelta(hours=-5))))), \
        "the same instant in another time zone"
    assert store.commit(1, transition("a2", 2, {"n": 2}))
    assert store.commit(0, first), "still ours after the state moved on"
    assert not store.commit(0, replace(first, recorded_at=AT + timedelta(microseconds=1))), \
        "another application of the alert (a later time) is not this commit"
    assert not store.commit(0, replace(first, reason="other")), "nor is another outcome of it"
    assert not store.commit(0, replace(first, details={"instrument": "MNQH6"}))
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, {"n": 2}, 2)
    assert [t.alert_id for t in store.history(FLOW, SYMBOL)] == ["a2", "a1"]
    assert store.transition_for(FLOW, "a1") == first


def test_transition_for_round_trips_every_field(store):
    before = trend_dmi.TrendState(SYMBOL, trend_dmi.PositionState.SHORT, trend_dmi.TrendColor.RED,
                                  last_event_at=AT).to_dict()
    assert store.commit(0, transition("seed", 1, before))
    paris = timezone(timedelta(hours=1))
    after = trend_dmi.TrendState(SYMBOL, trend_dmi.PositionState.LONG, trend_dmi.TrendColor.BLUE,
                                 last_event_at=AT + timedelta(minutes=10), last_event_ids=("flip",)).to_dict()
    flip = transition("flip", 2, after, before=before, reason="trend flipped to BLUE: close short, open long",
                      actions=("CLOSE_SHORT", "OPEN_LONG"), at=datetime(2025, 11, 26, 16, 10, 0, 5, tzinfo=paris),
                      details={"instrument": "MNQZ5", "event_at": "2025-11-26T15:10:00+00:00", "price": 21034.25,
                               "ratio": 0.1 + 0.2, "nested": {"legs": [1, 2], "note": "ünïcode"}})
    assert store.commit(1, flip)
    got = store.transition_for(FLOW, "flip")
    assert got == flip
    assert got.actions == ("CLOSE_SHORT", "OPEN_LONG"), "the actions' order is kept"
    assert got.recorded_at.tzinfo is not None and got.recorded_at.utcoffset() == timedelta(0)
    assert got.recorded_at == datetime(2025, 11, 26, 15, 10, 0, 5, tzinfo=UTC)
    assert got.details["ratio"] == 0.1 + 0.2 and got.details["nested"] == {"legs": [1, 2], "note": "ünïcode"}
    assert got.state_before == before and got.state_after == after and got.version_after == 2
    assert store.transition_for(FLOW, "seed").state_before is None
    assert store.transition_for("other_flow", "flip") is None, "alert ids are per flow"


def test_a_rejected_alert_with_the_state_unchanged_is_still_recorded(store):
    state = {"position": "LONG"}
    assert store.commit(0, transition("a1", 1, state))
    stale = transition("stale", 2, state, before=state, outcome="rejected", reason="stale: before the last event",
                       actions=())
    assert store.commit(1, stale)
    assert store.transition_for(FLOW, "stale") == stale
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, state, 2), "the version moves on, the state not"
    assert not store.commit(2, transition("stale", 3, state, before=state, outcome="rejected")), \
        "a re-delivery of the rejected alert is not recorded again"


def test_history_is_newest_first_per_symbol_and_flow(store):
    for n in range(1, 6):
        assert store.commit(n - 1, transition(f"mnq-{n}", n, at=AT + timedelta(minutes=n)))
    assert store.commit(0, transition("mes-1", 1, symbol="MES1!"))
    assert store.commit(0, transition("other-1", 1, flow="other_flow"))
    assert store.commit(0, transition("prefix-1", 1, symbol=SYMBOL + "X"))
    history = store.history(FLOW, SYMBOL)
    assert [t.alert_id for t in history] == ["mnq-5", "mnq-4", "mnq-3", "mnq-2", "mnq-1"]
    assert [t.version_after for t in history] == [5, 4, 3, 2, 1]
    assert [t.alert_id for t in store.history(FLOW, SYMBOL, limit=2)] == ["mnq-5", "mnq-4"]
    assert list(store.history(FLOW, SYMBOL, limit=0)) == []
    assert [t.alert_id for t in store.history(FLOW, "MES1!")] == ["mes-1"]
    assert [t.alert_id for t in store.history("other_flow", SYMBOL)] == ["other-1"]
    assert list(store.history("other_flow", "MES1!")) == []


def test_two_flows_with_one_symbol_are_independent(store):
    assert store.commit(0, transition("a", 1, {"flow": "one"}))
    assert store.commit(0, transition("a", 1, {"flow": "two"}, flow="other_flow")), \
        "the same alert id and version in another flow"
    assert store.commit(1, transition("b", 2, {"flow": "one", "n": 2}))
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, {"flow": "one", "n": 2}, 2)
    assert store.load("other_flow", SYMBOL) == StoredState("other_flow", SYMBOL, {"flow": "two"}, 1)
    assert store.transition_for("other_flow", "a").state_after == {"flow": "two"}
    assert not store.commit(0, transition("c", 1, flow="other_flow")), "other_flow is at version 1"


def test_instances_share_the_store(new_store):
    one, two = new_store(), new_store()
    assert one.commit(0, transition("a1", 1))
    assert two.load(FLOW, SYMBOL).version == 1
    assert not two.commit(0, transition("a2", 1))
    assert two.transition_for(FLOW, "a1") == one.transition_for(FLOW, "a1")


# ----------------------------------------------------------------------------- races


def test_sixteen_writers_at_one_version_have_exactly_one_winner(new_store):
    seed = new_store()
    assert seed.commit(0, transition("seed", 1, {"n": 1}))
    stores = [new_store() for _ in range(16)]
    results = run_threads(16, lambda i: stores[i].commit(1, transition(f"racer-{i}", 2, {"winner": i})))
    winners = [i for i, won in enumerate(results) if won]
    assert len(winners) == 1, f"{len(winners)} writers committed at version 1"
    [w] = winners
    assert seed.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, {"winner": w}, 2)
    assert [t.alert_id for t in seed.history(FLOW, SYMBOL)] == [f"racer-{w}", "seed"]
    assert [i for i in range(16) if seed.transition_for(FLOW, f"racer-{i}") is not None] == [w], \
        "a loser's transition was recorded"


def test_writers_that_reload_and_reapply_apply_every_alert_once(new_store):
    n = 8
    stores = [new_store() for _ in range(n)]
    all_loaded = threading.Barrier(n)  # every writer has read version 0 before any commits: n - 1 must lose
    lost = run_threads(n, lambda i: process_alert(stores[i], f"alert-{i}", after_first_load=all_loaded.wait))
    final = stores[0].load(FLOW, SYMBOL)
    assert final.version == n
    assert sorted(final.state["applied"]) == sorted(f"alert-{i}" for i in range(n)), "an alert lost or doubled"
    history = list(stores[0].history(FLOW, SYMBOL))
    assert [t.version_after for t in history] == list(range(n, 0, -1))
    assert [t.alert_id for t in reversed(history)] == final.state["applied"], "history is the order applied"
    for newer, older in itertools.pairwise(history):
        assert newer.state_before == older.state_after, "a transition was applied to a state it did not see"
    assert history[-1].state_before is None
    assert sum(lost) >= n - 1 and lost.count(0) == 1, f"lost races {lost}: one writer wins each round"
    for i in range(n):  # a re-delivery after the fact does nothing
        assert process_alert(stores[i], f"alert-{i}") == 0
    assert stores[0].load(FLOW, SYMBOL).version == n
