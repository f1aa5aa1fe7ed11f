"""The tick engine without Dagster: sync, baseline, reconcile, gates, marking, exactly-once
execution and the equity-history rule, on the real paper broker and SQLite ledger."""

import math
from datetime import UTC, datetime, timedelta

import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.ports import KillSwitchEngaged, OrderRequest, Side
from trading_assets.core.tick import PlannedOrder, PositionDrift, TickPlan, TickState, run_tick, settle_equity

FLOW = "ema_concentration"
T1, T2, T3 = "2025-11-18-12:30", "2025-11-18-13:00", "2025-11-18-13:30"
END = {T1: datetime(2025, 11, 18, 18, 0, tzinfo=UTC), T2: datetime(2025, 11, 18, 18, 30, tzinfo=UTC),
       T3: datetime(2025, 11, 18, 19, 0, tzinfo=UTC)}


@pytest.fixture
def paper(tmp_path):
    return PaperBroker(tmp_path / "broker.sqlite", starting_cash=10_000.0)


@pytest.fixture
def ledger(tmp_path):
    return SqliteLedger(tmp_path / "ledger.sqlite")


def buy(qty: float = 10):
    """A plan function that buys `qty` SPY at the tick's price unless already held."""
    seen: list[TickState] = []

    def plan(state: TickState) -> TickPlan:
        seen.append(state)
        if state.positions.get("SPY"):
            return TickPlan(notes=["holding"])
        return TickPlan([PlannedOrder("SPY", Side.BUY, qty, "entry", state.prices["SPY"], "test entry")])

    plan.seen = seen  # type: ignore[attr-defined]
    return plan


def tick(paper, ledger, key, price=100.0, plan=None, **kw):
    return run_tick(paper, ledger, flow=FLOW, partition_key=key, bar_end=END[key], prices={"SPY": price},
                    plan=plan or buy(), now=END[key] + timedelta(minutes=1), **kw)


def test_a_tick_plans_marks_and_places_once_and_a_rerun_places_nothing(paper, ledger):
    first = tick(paper, ledger, T1)
    assert [i.status for i in first.intents] == ["filled"] and first.execution.submitted
    again = tick(paper, ledger, T1)
    assert again.execution.submitted == [] and len(paper.orders()) == 1
    assert ledger.net_positions("paper:paper") == {"SPY": 10}


def test_the_plan_sees_the_reconciled_account_at_the_ticks_prices(paper, ledger):
    plan = buy()
    tick(paper, ledger, T1, price=123.0, plan=plan)
    [state] = plan.seen
    assert state.prices == {"SPY": 123.0} and state.positions == {} and state.account.cash == 10_000.0


def test_an_older_tick_is_gated_and_never_marks_the_account(paper, ledger):
    tick(paper, ledger, T2, price=100.0)
    marked = paper.account().equity
    plan = buy()
    older = tick(paper, ledger, T1, price=50.0, plan=plan)
    assert older.gated == "older" and not older.newest and older.newest_key == T2 and older.intents == []
    assert plan.seen == [], "no plan for a tick in the past"
    assert "older than the newest processed tick" in older.notes[0]
    assert paper.account().equity == marked


def test_an_alert_flow_is_not_gated_by_partition_order_and_records_its_equity(paper, ledger):
    """Alert-driven flows (forward_only=False): an alert that sorts before the newest one
    processed (another symbol's, say) still plans, trades and records equity once."""
    tick(paper, ledger, T2, price=100.0, plan=lambda state: TickPlan())
    later_sorted_earlier = tick(paper, ledger, T1, price=100.0, forward_only=False)
    assert later_sorted_earlier.gated is None and later_sorted_earlier.execution.submitted
    outcome = settle_equity(paper, ledger, flow=FLOW, partition_key=T1, bar_end=END[T1], forward_only=False)
    assert outcome.recorded and outcome.positions == {"SPY": 10}
    assert len(tick(paper, ledger, T1, price=100.0, forward_only=False).execution.submitted) == 0  # rerun


def test_a_stale_tick_is_gated_when_a_max_age_is_set(paper, ledger):
    report = run_tick(paper, ledger, flow=FLOW, partition_key=T1, bar_end=END[T1], prices={"SPY": 100.0},
                      plan=buy(), max_tick_age_minutes=30, now=END[T1] + timedelta(hours=2))
    assert report.gated == "stale" and paper.orders() == []


def test_drift_stops_the_tick_before_it_acts(paper, ledger):
    tick(paper, ledger, T1)
    paper.submit_order(OrderRequest("by-hand", "QQQ", Side.BUY, 1, reference_price=10.0))
    with pytest.raises(PositionDrift, match="QQQ: ledger 0 vs broker 1") as err:
        tick(paper, ledger, T2, plan=lambda s: TickPlan([PlannedOrder("SPY", Side.SELL, 10, "exit", 100.0)]))
    assert [d.symbol for d in err.value.drift] == ["QQQ"]
    assert [o.client_order_id for o in paper.orders()][-1] == "by-hand"


def test_the_kill_switch_places_and_plans_nothing(paper, ledger):
    with pytest.raises(KillSwitchEngaged):
        tick(paper, ledger, T1, kill_switch=True)
    assert paper.orders() == [] and not ledger.has_plan(FLOW, T1)


def test_equity_is_recorded_for_the_newest_tick_kept_for_an_older_one_and_unknown_for_a_backfill(paper, ledger):
    tick(paper, ledger, T2, price=100.0)
    newest = settle_equity(paper, ledger, flow=FLOW, partition_key=T2, bar_end=END[T2])
    assert newest.recorded and newest.equity == pytest.approx(paper.account().equity)
    tick(paper, ledger, T3, price=110.0)
    settle_equity(paper, ledger, flow=FLOW, partition_key=T3, bar_end=END[T3])
    kept = settle_equity(paper, ledger, flow=FLOW, partition_key=T2, bar_end=END[T2])
    assert not kept.recorded and kept.equity == newest.equity, "a rerun of T2 keeps T2's value"
    tick(paper, ledger, T1, price=50.0)  # a backfill of a tick that never ran
    backfill = settle_equity(paper, ledger, flow=FLOW, partition_key=T1, bar_end=END[T1])
    assert not backfill.recorded and math.isnan(backfill.equity) and "never recorded" in backfill.note
    assert set(ledger.equity_curve(FLOW)["partition_key"]) == {T2, T3}
    assert list(kept.curve["partition_key"]) == [T2], "the curve shown for a tick ends at that tick"
    assert backfill.drift == []
