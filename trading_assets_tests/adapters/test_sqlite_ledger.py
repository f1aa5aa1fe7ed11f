"""The SQLite ledger: plans recorded once, idempotent transactions, positions = baseline + fills."""

from datetime import UTC, datetime

import pytest

from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.ports import EquitySnapshot, Ledger, OrderIntent, Side, Transaction

NOW = datetime(2025, 11, 26, 15, 0, tzinfo=UTC)


def intent(cid, symbol="TQQQ", side=Side.BUY, qty=10.0, key="2025-11-26-10:00"):
    return OrderIntent(cid, "ema_concentration", key, "paper:paper", symbol, side, qty, "entry", 50.0)


def txn(tid, symbol="TQQQ", side=Side.BUY, qty=10.0, kind="fill"):
    return Transaction(tid, "paper:paper", "ema_concentration", "2025-11-26-10:00", symbol, side, qty, 50.0, 0.1,
                       kind, NOW, tid)


@pytest.fixture
def ledger(tmp_path):
    return SqliteLedger(tmp_path / "ledger.sqlite")


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
