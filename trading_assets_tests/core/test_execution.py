"""Exactly-once execution: deterministic ids, plan before broker, lookup after ambiguity."""

import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.execution import (
    account_drift,
    client_order_id,
    ensure_baseline,
    execute_plan,
    reconcile,
    sync_open_intents,
)
from trading_assets.core.ports import (
    AmbiguousOrderError,
    IntentStatus,
    KillSwitchEngaged,
    OrderIntent,
    OrderRequest,
    RateLimited,
    Side,
)

FLOW, KEY, ACCT = "ema_concentration", "2025-11-26-10:00", "paper:paper"


class FlakyBroker:
    """The real paper broker with one scripted failure around `submit_order`."""

    def __init__(self, inner: PaperBroker, mode: str):
        self.inner, self.mode, self.name = inner, mode, inner.name
        self.posts = 0

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def submit_order(self, request: OrderRequest):
        self.posts += 1
        if self.mode == "timeout_after_accept":
            self.inner.submit_order(request)
            raise AmbiguousOrderError("read timed out", broker=self.name)
        if self.mode == "timeout_before_accept":
            raise AmbiguousOrderError("connect timed out", broker=self.name)
        if self.mode == "rate_limited":
            raise RateLimited("429", retry_after=60, broker=self.name)
        if self.mode == "crash_after_submit":
            self.inner.submit_order(request)
            raise SystemExit("process killed between broker call and ledger write")
        return self.inner.submit_order(request)


@pytest.fixture
def paper(tmp_path):
    return PaperBroker(tmp_path / "broker.sqlite", starting_cash=10_000.0)


@pytest.fixture
def ledger(tmp_path):
    return SqliteLedger(tmp_path / "ledger.sqlite")


def intents(key=KEY):
    return [
        OrderIntent(client_order_id(FLOW, "TQQQ", key, "entry"), FLOW, key, ACCT, "TQQQ", Side.BUY, 10, "entry", 50.0),
    ]


def test_client_order_ids_are_deterministic_short_and_broker_safe():
    a = client_order_id(FLOW, "TQQQ", KEY, "entry")
    assert a == client_order_id(FLOW, "TQQQ", KEY, "entry")
    variants = {
        a,
        client_order_id(FLOW, "TQQQ", KEY, "exit"),
        client_order_id(FLOW, "TQQQ", "2025-11-26-10:30", "entry"),
        client_order_id(FLOW, "SPY", KEY, "entry"),
        client_order_id("fib_retracement", "TQQQ", KEY, "entry"),
    }
    assert len(variants) == 5
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,30}", a)  # valid IG dealReference, Alpaca and Tradovate ids


def test_client_order_ids_are_pinned_values():
    """Ids already at brokers and in ledgers were computed this way; a rerun (or a recovery
    lookup) in any process must compute the same ones, so the scheme is pinned."""
    assert client_order_id("ema_concentration", "TQQQ", "2025-11-26-10:00", "entry") == "ec-de415b50a63ad8a569c8112d84a"
    assert (client_order_id("fib_retracement", "CS.D.EURUSD.MINI.IP", "2025-11-26-10:00", "entry")
            == "fr-93ae6586287a840e66db06feea5")


@pytest.mark.parametrize("hash_seed", ["1", "4242"])
def test_client_order_ids_agree_across_processes(hash_seed):
    """Another process (other PYTHONHASHSEED, as after a crash and rerun) computes the same id."""
    code = ("from trading_assets.core.execution import client_order_id as c; "
            "print(c('ema_concentration', 'SPY', '2025-11-26-15:30', 'exit'))")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": hash_seed},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == client_order_id("ema_concentration", "SPY", "2025-11-26-15:30", "exit")


class CountingBroker(FlakyBroker):
    """Counts POSTs; right after its first order lookup answers, a second run executes the
    same tick in full (the window between the lookup and the claim, where two runs race)."""

    def __init__(self, inner, race=None):
        super().__init__(inner, mode="ok")
        self.race = race

    def get_order(self, client_order_id):
        found = self.inner.get_order(client_order_id)
        race, self.race = self.race, None
        if race is not None:
            race()
        return found


def test_two_runs_racing_one_tick_post_each_order_once(paper, ledger):
    """Both runs read the plan with the leg `planned`; only the one that claims it first
    POSTs; the other says so and sends nothing (the broker would see one POST)."""
    reports = {}
    broker = CountingBroker(paper)
    broker.race = lambda: reports.setdefault("b", execute_plan(broker, ledger, intents(), FLOW, KEY))
    reports["a"] = execute_plan(broker, ledger, intents(), FLOW, KEY)
    assert broker.posts == 1
    assert len(reports["b"].submitted) == 1
    assert reports["a"].submitted == [] and reports["a"].claimed_elsewhere == [intents()[0].client_order_id]
    assert [i.status for i in ledger.intents(FLOW, KEY)] == ["filled"]


def test_rerun_of_a_tick_places_no_second_order(paper, ledger):
    first = execute_plan(paper, ledger, intents(), FLOW, KEY)
    assert first.new_plan and len(first.submitted) == 1
    second = execute_plan(paper, ledger, intents(), FLOW, KEY)
    assert not second.new_plan and second.submitted == [] and len(second.skipped) == 1
    assert len(paper.orders()) == 1


def test_rerun_resolves_the_stored_plan_not_a_new_one(paper, ledger):
    execute_plan(paper, ledger, intents(), FLOW, KEY)
    other = [OrderIntent("different", FLOW, KEY, ACCT, "SPY", Side.BUY, 1, "entry", 10.0)]
    report = execute_plan(paper, ledger, other, FLOW, KEY)
    assert [i.symbol for i in report.intents] == ["TQQQ"]
    assert len(paper.orders()) == 1


def test_crash_between_broker_call_and_ledger_write_then_rerun(paper, ledger):
    flaky = FlakyBroker(paper, "crash_after_submit")
    with pytest.raises(SystemExit):
        execute_plan(flaky, ledger, intents(), FLOW, KEY)
    [stuck] = ledger.intents(FLOW, KEY)
    assert stuck.status == "submitting"  # intent was written before the broker call
    assert len(ledger.transactions()) == 0
    report = execute_plan(paper, ledger, intents(), FLOW, KEY)  # the rerun, healthy process
    assert report.adopted == [stuck.client_order_id] and report.submitted == []
    assert len(paper.orders()) == 1
    [fill] = ledger.transactions().itertuples()
    assert fill.qty == 10 and fill.transaction_id == stuck.client_order_id
    assert reconcile(ledger.net_positions(ACCT), {p.symbol: p.qty for p in paper.positions()}) == []


def test_sync_recovers_a_crashed_tick_from_an_earlier_run(paper, ledger):
    with pytest.raises(SystemExit):
        execute_plan(FlakyBroker(paper, "crash_after_submit"), ledger, intents(), FLOW, KEY)
    recovered = sync_open_intents(paper, ledger, FLOW)
    assert [i.status for i in recovered] == ["filled"]
    assert ledger.net_positions(ACCT) == {"TQQQ": 10}


def test_timeout_after_accept_is_resolved_by_lookup_not_resend(paper, ledger):
    flaky = FlakyBroker(paper, "timeout_after_accept")
    report = execute_plan(flaky, ledger, intents(), FLOW, KEY)
    assert flaky.posts == 1 and len(paper.orders()) == 1
    assert ledger.intents(FLOW, KEY)[0].status == "filled"
    assert report.submitted == [intents()[0].client_order_id]


def test_timeout_before_accept_marks_unknown_and_stops(paper, ledger):
    flaky = FlakyBroker(paper, "timeout_before_accept")
    with pytest.raises(AmbiguousOrderError):
        execute_plan(flaky, ledger, intents(), FLOW, KEY)
    assert ledger.intents(FLOW, KEY)[0].status == "unknown"
    assert paper.orders() == []
    # a later rerun looks it up (absent), then sends it once
    execute_plan(paper, ledger, intents(), FLOW, KEY)
    assert len(paper.orders()) == 1


def test_rate_limit_leaves_the_intent_planned(paper, ledger):
    with pytest.raises(RateLimited):
        execute_plan(FlakyBroker(paper, "rate_limited"), ledger, intents(), FLOW, KEY)
    assert ledger.intents(FLOW, KEY)[0].status == "planned"


def test_business_reject_is_recorded_with_the_reason(paper, ledger):
    big = [OrderIntent("big", FLOW, KEY, ACCT, "TQQQ", Side.BUY, 10_000, "entry", 50.0)]
    report = execute_plan(paper, ledger, big, FLOW, KEY)
    assert report.rejected == ["big"]
    [row] = ledger.intents(FLOW, KEY)
    assert row.status == "rejected" and row.reason == "insufficient buying power"


def test_kill_switch_places_and_records_nothing(paper, ledger):
    with pytest.raises(KillSwitchEngaged):
        execute_plan(paper, ledger, intents(), FLOW, KEY, kill_switch=True)
    assert paper.orders() == [] and not ledger.has_plan(FLOW, KEY)


def test_baseline_then_reconcile_detects_drift(paper, ledger):
    paper.submit_order(OrderRequest("outside", "AAPL", Side.BUY, 2, reference_price=100.0))  # before we start
    assert ensure_baseline(paper, ledger, ACCT, FLOW, datetime.now(UTC))
    assert not ensure_baseline(paper, ledger, ACCT, FLOW, datetime.now(UTC))
    broker_pos = lambda: {p.symbol: p.qty for p in paper.positions()}  # noqa: E731
    assert reconcile(ledger.net_positions(ACCT), broker_pos()) == []
    paper.submit_order(OrderRequest("manual", "AAPL", Side.BUY, 1, reference_price=100.0))  # by hand, later
    [drift] = reconcile(ledger.net_positions(ACCT), broker_pos())
    assert (drift.symbol, drift.ledger_qty, drift.broker_qty) == ("AAPL", 2, 3)


def test_an_order_another_run_has_in_flight_is_not_drift_but_a_manual_one_is(paper, ledger):
    """Two alert workers share one account: while run B is placing its order, run A's
    reconciliation sees the broker ahead of the ledger. A's check settles B's open
    intent (its fill is recorded once) instead of calling it drift; a leg still on its
    way (sent, unanswered, not yet at the broker) is not drift either; a manual trade is."""
    ensure_baseline(paper, ledger, ACCT, FLOW, datetime.now(UTC))
    b_key = "2025-11-26-10:30"
    [b_leg] = intents(b_key)
    ledger.record_plan(FLOW, b_key, [b_leg])
    assert ledger.claim_intent(b_leg.client_order_id, IntentStatus.PLANNED)  # B claimed it...
    paper.submit_order(OrderRequest(b_leg.client_order_id, "TQQQ", Side.BUY, 10, reference_price=50.0))
    # ... and its POST landed; B has not written the answer yet when A reconciles
    drift, positions = account_drift(paper, ledger, FLOW, ACCT)
    assert drift == [] and positions == {"TQQQ": 10}
    assert [i.status for i in ledger.intents(FLOW, b_key)] == [IntentStatus.FILLED]
    assert len(ledger.transactions(flow=FLOW, partition_key=b_key)) == 1
    assert account_drift(paper, ledger, FLOW, ACCT)[0] == []  # settled once, not twice

    c_key = "2025-11-26-11:00"
    [c_leg] = intents(c_key)
    ledger.record_plan(FLOW, c_key, [c_leg])
    assert ledger.claim_intent(c_leg.client_order_id, IntentStatus.PLANNED)  # sent, not at the broker yet
    paper.submit_order(OrderRequest("by-hand", "AAPL", Side.BUY, 1, reference_price=100.0))
    drift, _ = account_drift(paper, ledger, FLOW, ACCT)
    assert [(d.symbol, d.ledger_qty, d.broker_qty) for d in drift] == [("AAPL", 0, 1)]


def test_intent_statuses_cover_every_broker_status_and_split_into_open_and_final():
    from trading_assets.core.ports import FINAL_INTENT_STATUSES, OPEN_INTENT_STATUSES, IntentStatus, OrderStatus

    assert {IntentStatus.of(s) for s in OrderStatus} <= set(IntentStatus)
    assert {"filled", "canceled", "rejected", "expired"} == FINAL_INTENT_STATUSES
    assert set(IntentStatus) == OPEN_INTENT_STATUSES | FINAL_INTENT_STATUSES
    assert {"planned", "submitting", "unknown", "partially_filled"} <= OPEN_INTENT_STATUSES
