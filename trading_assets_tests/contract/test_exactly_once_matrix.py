"""Exactly-once order placement in both worlds: the tick engine (`core.execution`,
`core.tick`) on the real paper broker, over the SQLite ledger and over the DynamoDB
ledger (moto). Each case: a rerun, a crash between the broker call and the ledger write,
two runs racing one tick, an ambiguous POST. "A rerun" uses a new ledger client over the
same store, as a new process would."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.execution import client_order_id, execute_plan, reconcile
from trading_assets.core.ports import AmbiguousOrderError, IntentStatus, Ledger, OrderIntent, OrderRequest, Side
from trading_assets.core.tick import PlannedOrder, TickPlan, run_tick
from trading_assets_tests.contract.test_ledger_contract import LEDGERS, dynamodb_ledger
from trading_assets_tests.core.test_execution import FlakyBroker

FLOW, KEY, ACCT = "ema_concentration", "2025-11-26-10:00", "paper:paper"
BAR_END = datetime(2025, 11, 26, 15, 30, tzinfo=UTC)


@dataclass
class World:
    """One store (a ledger's file or tables, the paper broker's file) and ways to open
    fresh clients of it (`own_connection`: a DynamoDB ledger with its own boto3 client,
    else a new ledger object over the session's shared HTTP client)."""

    open_ledger: Callable[[bool], Ledger]
    broker_path: str

    def new_ledger(self, own_connection: bool = False) -> Ledger:
        return self.open_ledger(own_connection)

    def new_broker(self) -> PaperBroker:
        return PaperBroker(self.broker_path, starting_cash=10_000.0)


@pytest.fixture(params=LEDGERS)
def world(request, tmp_path) -> World:
    if request.param == "sqlite":
        path = tmp_path / "ledger.sqlite"
        return World(lambda own: SqliteLedger(path), str(tmp_path / "broker.sqlite"))
    aws = request.getfixturevalue("aws_env")
    dynamodb_ledger(aws)  # the tables

    def open_ledger(own: bool) -> Ledger:
        return dynamodb_ledger(aws, own_client=own)

    return World(open_ledger, str(tmp_path / "broker.sqlite"))


def leg() -> list[OrderIntent]:
    return [OrderIntent(client_order_id(FLOW, "TQQQ", KEY, "entry"), FLOW, KEY, ACCT, "TQQQ", Side.BUY, 10,
                        "entry", 50.0)]


def buy_tqqq(state) -> TickPlan:
    if state.positions.get("TQQQ"):
        return TickPlan(notes=["holding"])
    return TickPlan([PlannedOrder("TQQQ", Side.BUY, 10, "entry", state.prices["TQQQ"])])


def tick(broker, ledger):
    return run_tick(broker, ledger, flow=FLOW, partition_key=KEY, bar_end=BAR_END, prices={"TQQQ": 50.0},
                    plan=buy_tqqq, now=BAR_END + timedelta(minutes=1))


def positions(paper: PaperBroker) -> dict[str, float]:
    return {p.symbol: p.qty for p in paper.positions()}


def test_a_rerun_of_a_tick_places_no_second_order(world):
    paper = world.new_broker()
    first = tick(paper, world.new_ledger())
    assert [i.status for i in first.intents] == [IntentStatus.FILLED] and len(first.execution.submitted) == 1
    ledger = world.new_ledger()
    again = tick(world.new_broker(), ledger)
    assert again.execution.submitted == [] and not again.execution.new_plan
    assert len(paper.orders()) == 1
    assert len(ledger.transactions(flow=FLOW, partition_key=KEY)) == 1
    assert ledger.net_positions(ACCT) == positions(paper) == {"TQQQ": 10}


def test_a_crash_between_the_broker_call_and_the_ledger_write_is_adopted_on_rerun(world):
    paper = world.new_broker()
    with pytest.raises(SystemExit):
        execute_plan(FlakyBroker(paper, "crash_after_submit"), world.new_ledger(), leg(), FLOW, KEY)
    ledger = world.new_ledger()  # the next process
    [stuck] = ledger.intents(FLOW, KEY)
    assert stuck.status is IntentStatus.SUBMITTING and ledger.transactions().empty
    report = execute_plan(world.new_broker(), ledger, leg(), FLOW, KEY)
    assert report.adopted == [stuck.client_order_id] and report.submitted == []
    assert len(paper.orders()) == 1
    [fill] = ledger.transactions().itertuples()
    assert (fill.transaction_id, fill.qty, fill.kind) == (stuck.client_order_id, 10, "fill")
    assert reconcile(ledger.net_positions(ACCT), positions(paper)) == []


def test_a_crashed_tick_is_recovered_by_the_next_run_of_the_engine(world):
    paper = world.new_broker()
    with pytest.raises(SystemExit):
        tick(FlakyBroker(paper, "crash_after_submit"), world.new_ledger())
    ledger = world.new_ledger()
    report = tick(world.new_broker(), ledger)
    assert report.recovered == 1 and report.execution.submitted == [] and report.execution.adopted == []
    assert len(paper.orders()) == 1 and len(ledger.transactions(flow=FLOW, partition_key=KEY)) == 1
    assert ledger.net_positions(ACCT) == positions(paper) == {"TQQQ": 10}


class RacingBroker(FlakyBroker):
    """One run's broker client: counts POSTs at the broker (shared by the runs), and
    holds each run after its order lookup until the other has looked up too, so both
    read the leg `planned` and find nothing at the broker before either claims it."""

    def __init__(self, inner: PaperBroker, barrier: threading.Barrier, posts: list[str]):
        super().__init__(inner, mode="ok")
        self.barrier, self.shared_posts = barrier, posts

    def get_order(self, client_order_id):
        found = self.inner.get_order(client_order_id)
        if self.barrier is not None:
            barrier, self.barrier = self.barrier, None
            barrier.wait()
        return found

    def submit_order(self, request: OrderRequest):
        self.shared_posts.append(request.client_order_id)
        return super().submit_order(request)


def test_two_runs_racing_one_tick_post_the_order_once(world):
    barrier, posts = threading.Barrier(2, timeout=30), []
    runs = [(RacingBroker(world.new_broker(), barrier, posts), world.new_ledger(own_connection=True))
            for _ in range(2)]
    reports, errors = [None, None], []

    def run(n):
        try:
            reports[n] = execute_plan(*runs[n], leg(), FLOW, KEY)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert posts == [leg()[0].client_order_id], "the broker saw one POST"
    assert sorted(len(r.submitted) for r in reports) == [0, 1]
    assert sorted(len(r.claimed_elsewhere) for r in reports) == [0, 1]
    assert sorted(r.new_plan for r in reports) == [False, True]
    ledger = world.new_ledger()
    assert [i.status for i in ledger.intents(FLOW, KEY)] == [IntentStatus.FILLED]
    assert len(ledger.transactions()) == 1 and len(world.new_broker().orders()) == 1


def test_an_ambiguous_post_after_accept_is_resolved_by_lookup_not_resent(world):
    paper = world.new_broker()
    ledger = world.new_ledger()
    flaky = FlakyBroker(paper, "timeout_after_accept")
    report = execute_plan(flaky, ledger, leg(), FLOW, KEY)
    assert flaky.posts == 1 and len(paper.orders()) == 1
    assert report.submitted == [leg()[0].client_order_id]
    assert ledger.intents(FLOW, KEY)[0].status is IntentStatus.FILLED
    assert len(ledger.transactions()) == 1


def test_an_ambiguous_post_before_accept_is_marked_unknown_and_sent_once_on_rerun(world):
    paper = world.new_broker()
    with pytest.raises(AmbiguousOrderError):
        execute_plan(FlakyBroker(paper, "timeout_before_accept"), world.new_ledger(), leg(), FLOW, KEY)
    ledger = world.new_ledger()
    assert ledger.intents(FLOW, KEY)[0].status is IntentStatus.UNKNOWN and paper.orders() == []
    rerun = FlakyBroker(world.new_broker(), "ok")
    execute_plan(rerun, ledger, leg(), FLOW, KEY)
    assert rerun.posts == 1 and len(paper.orders()) == 1
    assert ledger.intents(FLOW, KEY)[0].status is IntentStatus.FILLED
