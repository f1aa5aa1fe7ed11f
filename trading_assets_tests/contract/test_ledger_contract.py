"""One contract for every ledger: SQLite (a temp file) and DynamoDB (a real moto server,
tables made by `ensure_tables`). Plans recorded once, idempotent transactions, positions =
baseline + fills, equity history, and the same frames (columns, dtypes) from both."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.ports import EquitySnapshot, IntentStatus, Ledger, OrderIntent, Side, Transaction

NOW = datetime(2025, 11, 26, 15, 0, tzinfo=UTC)
FLOW = "ema_concentration"
LEDGERS = ("sqlite", "dynamodb")


_CLIENTS: dict[str, object] = {}


def dynamodb_client(aws):
    """One boto3 client per moto server for the session (building one loads botocore's
    models: 0.1-0.3 s); `aws_env` resets the server's state for each test."""
    from trading_assets.adapters.aws import clients

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    if endpoint not in _CLIENTS:
        _CLIENTS[endpoint] = clients.client("dynamodb", aws.region)
    return _CLIENTS[endpoint]


def dynamodb_ledger(aws, *, own_client: bool = False, **kw) -> Ledger:
    """The DynamoDB ledger over fresh tables made by `ensure_tables` (with its own boto3
    client if `own_client`, as a second process would have)."""
    from trading_assets.adapters.aws.dynamodb_ledger import DynamoDbLedger, ensure_tables

    shared = dynamodb_client(aws)
    ensure_tables(aws.region, aws.transactions_table, aws.equity_table, aws.orders_table, client=shared)
    return DynamoDbLedger(aws.region, aws.transactions_table, aws.equity_table, aws.orders_table,
                          client=None if own_client else shared, **kw)


@pytest.fixture(params=LEDGERS)
def ledger(request, tmp_path) -> Ledger:
    if request.param == "sqlite":
        return SqliteLedger(tmp_path / "ledger.sqlite")
    return dynamodb_ledger(request.getfixturevalue("aws_env"))


def intent(cid, symbol="TQQQ", side=Side.BUY, qty=10.0, key="2025-11-26-10:00"):
    return OrderIntent(cid, "ema_concentration", key, "paper:paper", symbol, side, qty, "entry", 50.0)


def txn(tid, symbol="TQQQ", side=Side.BUY, qty=10.0, kind="fill"):
    return Transaction(tid, "paper:paper", "ema_concentration", "2025-11-26-10:00", symbol, side, qty, 50.0, 0.1,
                       kind, NOW, tid)


def fill(tid, *, account="paper:paper", flow=FLOW, key="2025-11-26-10:00", symbol="TQQQ", side=Side.BUY,
         qty=10.0, price=50.0, at=NOW, kind="fill", cid="same"):
    return Transaction(tid, account, flow, key, symbol, side, qty, price, 0.1, kind, at,
                       tid if cid == "same" else cid)


# ----------------------------------------------------------------------------- moved from test_sqlite_ledger.py


def test_implements_the_ledger_protocol(ledger):
    assert isinstance(ledger, Ledger)


def test_a_tick_is_planned_once_and_keeps_its_order(ledger):
    assert ledger.record_plan("ema_concentration", "2025-11-26-10:00", [intent("s1", side=Side.SELL), intent("b1")])
    assert not ledger.record_plan("ema_concentration", "2025-11-26-10:00", [intent("other")])
    assert [i.client_order_id for i in ledger.intents("ema_concentration", "2025-11-26-10:00")] == ["s1", "b1"]
    assert ledger.has_plan("ema_concentration", "2025-11-26-10:00")
    assert ledger.latest_plan_key("ema_concentration") == "2025-11-26-10:00"


def test_empty_plan_still_marks_the_tick(ledger):
    assert ledger.record_plan("ema_concentration", "2025-11-26-10:30", [])
    assert ledger.has_plan("ema_concentration", "2025-11-26-10:30")


def test_open_only_filters_final_intents(ledger):
    ledger.record_plan("ema_concentration", "k", [intent("a", key="k"), intent("b", key="k")])
    ledger.update_intent("a", status="filled", filled_qty=10.0)
    assert [i.client_order_id for i in ledger.intents("ema_concentration", open_only=True)] == ["b"]
    with pytest.raises(KeyError):
        ledger.update_intent("missing", status="filled")
    with pytest.raises(ValueError):
        ledger.update_intent("a", symbol="AAPL")


def test_transactions_are_idempotent_by_id(ledger):
    assert ledger.record_transaction(txn("t1"))
    assert not ledger.record_transaction(txn("t1"))
    assert len(ledger.transactions()) == 1
    assert ledger.net_positions("paper:paper") == {"TQQQ": 10.0}


def test_positions_are_baseline_plus_fills(ledger):
    assert not ledger.has_baseline("paper:paper")
    assert ledger.record_baseline("paper:paper", [txn("base-AAPL", symbol="AAPL", qty=3, kind="baseline")])
    assert not ledger.record_baseline("paper:paper", [txn("base-X", symbol="X", qty=1, kind="baseline")])
    ledger.record_transaction(txn("t1", symbol="AAPL", side=Side.SELL, qty=3))
    ledger.record_transaction(txn("t2"))
    assert ledger.net_positions("paper:paper") == {"TQQQ": 10.0}


def test_equity_snapshot_is_upserted_per_tick(ledger):
    snap = EquitySnapshot("ema_concentration", "k1", "paper:paper", NOW, 100.0, 150.0, 100.0, {"TQQQ": 1.0})
    ledger.record_equity(snap)
    ledger.record_equity(EquitySnapshot("ema_concentration", "k1", "paper:paper", NOW, 90.0, 160.0, 90.0, {}))
    curve = ledger.equity_curve("ema_concentration")
    assert len(curve) == 1 and curve["equity"].iloc[0] == 160.0


# ----------------------------------------------------------------------------- plans and intents


def test_a_plan_is_kept_whole_and_not_replaced(ledger):
    first = [intent("p1", symbol="SPY", side=Side.SELL, qty=3.0), intent("p2", qty=7.5)]
    first[0].extra = {"reason": "exit", "weights": [0.1, 0.2]}
    first[1].reference_price = None
    assert ledger.record_plan(FLOW, "2025-11-26-10:00", first)
    assert not ledger.record_plan(FLOW, "2025-11-26-10:00", [])  # a rerun with another plan changes nothing
    got = ledger.intents(FLOW, "2025-11-26-10:00")
    assert got == first  # every field, in plan order
    assert not ledger.has_plan(FLOW, "2025-11-26-10:30") and not ledger.has_plan("other_flow", "2025-11-26-10:00")
    assert ledger.intents(FLOW, "2025-11-26-10:30") == [] and ledger.intents("other_flow") == []


def test_a_plan_of_more_than_a_hundred_intents_is_recorded_once_in_order(ledger):
    key = "2025-11-26-11:00"
    big = [intent(f"big-{n:03d}", symbol=f"S{(n * 37) % 131:03d}", key=key) for n in range(101)]
    assert ledger.record_plan(FLOW, key, big)
    assert not ledger.record_plan(FLOW, key, [intent("late", key=key)])
    assert [i.client_order_id for i in ledger.intents(FLOW, key)] == [i.client_order_id for i in big]
    assert len(ledger.intents(FLOW, key, open_only=True)) == 101
    assert len(ledger.intents(FLOW, open_only=True)) == 101


def test_latest_plan_key_is_the_newest_tick_not_the_last_planned(ledger):
    assert ledger.latest_plan_key(FLOW) is None
    for key in ("2025-11-26-10:30", "2025-11-26-11:00", "2025-11-26-10:00"):
        ledger.record_plan(FLOW, key, [])
    ledger.record_plan("other_flow", "2025-11-27-10:00", [])
    assert ledger.latest_plan_key(FLOW) == "2025-11-26-11:00"
    assert ledger.latest_plan_key("other_flow") == "2025-11-27-10:00"
    assert ledger.latest_plan_key("never") is None


def test_claim_intent_is_a_compare_and_set(ledger):
    ledger.record_plan(FLOW, "k", [intent("c1", key="k")])
    assert not ledger.claim_intent("c1", IntentStatus.SUBMITTING)  # not what it is
    assert ledger.claim_intent("c1", IntentStatus.PLANNED)
    assert not ledger.claim_intent("c1", IntentStatus.PLANNED), "a second claim of the same leg loses"
    assert ledger.intents(FLOW, "k")[0].status is IntentStatus.SUBMITTING
    ledger.update_intent("c1", status=IntentStatus.PLANNED, reason="429")  # not accepted: back to planned
    assert ledger.claim_intent("c1", IntentStatus.PLANNED)
    assert not ledger.claim_intent("missing", IntentStatus.PLANNED)


def test_intents_move_through_their_states_and_open_only_follows(ledger):
    ledger.record_plan(FLOW, "k1", [intent("a", key="k1"), intent("b", key="k1"), intent("c", key="k1")])
    ledger.record_plan(FLOW, "k2", [intent("d", key="k2")])
    assert [i.client_order_id for i in ledger.intents(FLOW, open_only=True)] == ["a", "b", "c", "d"]
    assert ledger.claim_intent("a", IntentStatus.PLANNED)
    ledger.update_intent("a", status=IntentStatus.PARTIALLY_FILLED, broker_order_id="B-1", filled_qty=4.0,
                         filled_avg_price=50.25, reason=None)
    ledger.update_intent("b", status=IntentStatus.REJECTED, reason="insufficient buying power")
    ledger.update_intent("c", status=IntentStatus.UNKNOWN, reason="POST outcome unknown", extra={"n": 1}, qty=9.0)
    assert [i.client_order_id for i in ledger.intents(FLOW, open_only=True)] == ["a", "c", "d"]
    assert [i.client_order_id for i in ledger.intents(FLOW, "k1", open_only=True)] == ["a", "c"]
    a, b, c = ledger.intents(FLOW, "k1")
    assert (a.status, a.broker_order_id, a.filled_qty, a.filled_avg_price, a.reason) == (
        IntentStatus.PARTIALLY_FILLED, "B-1", 4.0, 50.25, None)
    assert (b.status, b.reason) == (IntentStatus.REJECTED, "insufficient buying power")
    assert (c.status, c.extra, c.qty) == (IntentStatus.UNKNOWN, {"n": 1}, 9.0)
    ledger.update_intent("a", status=IntentStatus.FILLED, filled_qty=10.0)
    ledger.update_intent("c", status=IntentStatus.PLANNED)  # open again after an unknown: still listed
    assert [i.client_order_id for i in ledger.intents(FLOW, open_only=True)] == ["c", "d"]
    assert [i.client_order_id for i in ledger.intents(FLOW)] == ["a", "b", "c", "d"]


def test_updating_a_missing_intent_is_a_key_error_and_unknown_fields_a_value_error(ledger):
    with pytest.raises(KeyError, match="no order intent 'ghost'"):
        ledger.update_intent("ghost", status=IntentStatus.FILLED)
    ledger.record_plan(FLOW, "k", [intent("real", key="k")])
    with pytest.raises(ValueError, match="cannot update intent fields"):
        ledger.update_intent("real", partition_key="other")
    assert ledger.intents(FLOW, "k")[0].status is IntentStatus.PLANNED


# ----------------------------------------------------------------------------- transactions


def test_a_fill_recorded_twice_is_one_row_and_a_changed_fill_is_updated(ledger):
    assert ledger.record_transaction(fill("f1", qty=4.0))
    assert not ledger.record_transaction(fill("f1", qty=4.0))
    assert ledger.record_transaction(fill("f1", qty=10.0, price=50.5))  # the rest of a partial fill
    assert not ledger.record_transaction(fill("f1", qty=10.0, price=50.5))
    [row] = ledger.transactions().itertuples()
    assert (row.qty, row.price) == (10.0, 50.5)
    assert ledger.net_positions("paper:paper") == {"TQQQ": 10.0}


def test_transactions_filter_by_account_flow_and_tick_oldest_first(ledger):
    t = NOW
    ledger.record_transaction(fill("late", at=t + timedelta(minutes=2)))
    ledger.record_transaction(fill("early", at=t))
    ledger.record_transaction(fill("other-tick", key="2025-11-26-10:30", at=t + timedelta(minutes=1)))
    ledger.record_transaction(fill("other-flow", flow="fib_retracement", at=t + timedelta(minutes=3)))
    ledger.record_transaction(fill("other-acct", account="alpaca:1", at=t + timedelta(minutes=4), cid=None))

    def ids(**kw):
        return list(ledger.transactions(**kw)["transaction_id"])

    assert ids() == ["early", "other-tick", "late", "other-flow", "other-acct"]
    assert ids(account="paper:paper") == ["early", "other-tick", "late", "other-flow"]
    assert ids(flow=FLOW) == ["early", "other-tick", "late", "other-acct"]
    assert ids(flow=FLOW, partition_key="2025-11-26-10:00") == ["early", "late", "other-acct"]
    assert ids(account="paper:paper", flow=FLOW, partition_key="2025-11-26-10:00") == ["early", "late"]
    assert ids(flow=FLOW, partition_key="2025-11-26-10:30") == ["other-tick"]
    assert ids(account="nobody") == [] and ids(flow=FLOW, partition_key="never") == []
    frame = ledger.transactions(account="alpaca:1")
    assert frame["client_order_id"].isna().all()
    assert str(frame["executed_at"].dt.tz) == "UTC" and frame["executed_at"].iloc[0] == t + timedelta(minutes=4)


def test_net_positions_are_the_baseline_plus_every_fill_zeros_dropped(ledger):
    acct = "paper:paper"
    assert ledger.record_baseline(acct, [
        fill(f"baseline:{acct}:AAPL", key="baseline", symbol="AAPL", qty=3.0, kind="baseline", cid=None),
        fill(f"baseline:{acct}:QQQ", key="baseline", symbol="QQQ", side=Side.SELL, qty=2.0, kind="baseline",
             cid=None),
    ])
    ledger.record_transaction(fill("f1", symbol="AAPL", side=Side.SELL, qty=3.0))
    ledger.record_transaction(fill("f2", symbol="TQQQ", qty=12.5))
    ledger.record_transaction(fill("f3", symbol="TQQQ", side=Side.SELL, qty=2.5))
    ledger.record_transaction(fill("f4", account="other", symbol="SPY", qty=1.0))
    assert ledger.net_positions(acct) == {"QQQ": -2.0, "TQQQ": 10.0}
    assert ledger.net_positions("other") == {"SPY": 1.0}
    assert ledger.net_positions("nobody") == {}
    kinds = ledger.transactions(account=acct)["kind"].tolist()
    assert sorted(kinds) == ["baseline", "baseline", "fill", "fill", "fill"]


def test_a_baseline_is_captured_once_per_account(ledger):
    assert ledger.record_baseline("a1", [])  # an empty account still has its baseline
    assert ledger.has_baseline("a1") and not ledger.has_baseline("a2")
    assert not ledger.record_baseline("a1", [fill("baseline:a1:X", account="a1", symbol="X", kind="baseline")])
    assert ledger.transactions(account="a1").empty and ledger.net_positions("a1") == {}
    assert ledger.record_baseline("a2", [fill("baseline:a2:X", account="a2", symbol="X", kind="baseline")])
    assert ledger.net_positions("a2") == {"X": 10.0}


# ----------------------------------------------------------------------------- equity


def snapshot(key, minutes, equity, flow=FLOW, positions=None):
    return EquitySnapshot(flow, key, "paper:paper", NOW + timedelta(minutes=minutes), equity - 10.0, equity,
                          equity - 10.0, positions if positions is not None else {"TQQQ": 1.5, "AAPL": 2.0})


def test_the_equity_curve_is_one_row_per_tick_in_time_order(ledger):
    ledger.record_equity(snapshot("2025-11-26-11:00", 60, 103.25))
    ledger.record_equity(snapshot("2025-11-26-10:00", 0, 101.0))
    ledger.record_equity(snapshot("2025-11-26-10:30", 30, 99.5, positions={}))
    ledger.record_equity(snapshot("2025-11-26-10:30", 30, 100.125, positions={}))  # a rerun of the tick
    ledger.record_equity(snapshot("2025-11-26-10:00", 0, 1.0, flow="fib_retracement"))
    curve = ledger.equity_curve(FLOW)
    assert list(curve.columns) == ["partition_key", "as_of", "account", "cash", "equity", "buying_power", "positions"]
    assert list(curve["partition_key"]) == ["2025-11-26-10:00", "2025-11-26-10:30", "2025-11-26-11:00"]
    assert list(curve["equity"]) == [101.0, 100.125, 103.25]
    assert curve["positions"].iloc[0] == '{"AAPL": 2.0, "TQQQ": 1.5}' and curve["positions"].iloc[1] == "{}"
    assert curve["as_of"].iloc[2] == NOW + timedelta(minutes=60) and str(curve["as_of"].dt.tz) == "UTC"
    assert len(ledger.equity_curve("fib_retracement")) == 1 and ledger.equity_curve("never").empty


# ----------------------------------------------------------------------------- same frames from both


def _fill_both(ledger):
    ledger.record_baseline("paper:paper", [fill("baseline:paper:paper:AAPL", key="baseline", symbol="AAPL",
                                                qty=3.0, kind="baseline", cid=None)])
    ledger.record_transaction(fill("f1", qty=0.1 + 0.2, price=1 / 3))
    ledger.record_transaction(fill("f2", at=datetime(2025, 11, 26, 10, 0, 0, 123456, tzinfo=UTC), side=Side.SELL))
    ledger.record_equity(snapshot("2025-11-26-10:00", 0, 100.0 / 7))


def test_both_ledgers_give_the_same_frames(tmp_path, aws_env):
    """Same columns, dtypes and values (but recorded_at, a wall-clock time) for the same
    history, non-empty and empty."""
    sqlite, dynamo = SqliteLedger(tmp_path / "l.sqlite"), dynamodb_ledger(aws_env)
    for kw in ({}, {"flow": FLOW, "partition_key": "2025-11-26-10:00"}, {"account": "nobody"}):
        pd.testing.assert_frame_equal(sqlite.transactions(**kw), dynamo.transactions(**kw))
    pd.testing.assert_frame_equal(sqlite.equity_curve(FLOW), dynamo.equity_curve(FLOW))
    for led in (sqlite, dynamo):
        _fill_both(led)
    for kw in ({}, {"flow": FLOW, "partition_key": "2025-11-26-10:00"}, {"account": "paper:paper"},
               {"flow": FLOW}):
        a, b = sqlite.transactions(**kw), dynamo.transactions(**kw)
        assert len(a) == 3 or kw.get("partition_key")
        assert a["recorded_at"].notna().all() and b["recorded_at"].notna().all()
        pd.testing.assert_frame_equal(a.drop(columns="recorded_at"), b.drop(columns="recorded_at"))
        assert a["recorded_at"].dtype == b["recorded_at"].dtype
    assert dynamo.transactions(flow=FLOW, partition_key="2025-11-26-10:00")["qty"].iloc[-1] == 0.1 + 0.2
    pd.testing.assert_frame_equal(sqlite.equity_curve(FLOW), dynamo.equity_curve(FLOW))
    assert sqlite.net_positions("paper:paper") == dynamo.net_positions("paper:paper")
