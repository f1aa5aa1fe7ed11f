"""The DynamoDB ledger's own cases (the shared ones are in contract/test_ledger_contract.py):
races on one tick and one leg, a writer that dies mid-plan, botocore retries of our own
writes, throttling, setup errors, numbers DynamoDB cannot hold, bootstrap.

All against a real moto server (`aws_env`); the retry cases put a small HTTP proxy on
127.0.0.1 between the client and moto that throttles or drops answers on request."""

from __future__ import annotations

import http.client
import http.server
import json
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import boto3
import pytest

from trading_assets.adapters.aws import clients
from trading_assets.adapters.aws.clients import AwsSetupError
from trading_assets.adapters.aws.dynamodb_ledger import DynamoDbLedger, ensure_tables
from trading_assets.core.ports import EquitySnapshot, IntentStatus, OrderIntent, Side, Transaction
from trading_assets.resources.ledger import DynamoDbLedgerResource
from trading_assets_tests.contract.test_ledger_contract import dynamodb_client, dynamodb_ledger
from trading_assets_tests.fakes.concurrency import run_threads

FLOW, KEY = "ema_concentration", "2025-11-26-10:00"
NOW = datetime(2025, 11, 26, 15, 0, tzinfo=UTC)


def intent(cid, key=KEY, qty=10.0, price=50.0):
    return OrderIntent(cid, FLOW, key, "paper:paper", "TQQQ", Side.BUY, qty, "entry", price)


def fill(tid, qty=10.0, price=50.0):
    return Transaction(tid, "paper:paper", FLOW, KEY, "TQQQ", Side.BUY, qty, price, 0.1, "fill", NOW, tid)


def count_items(aws, table: str) -> int:
    return dynamodb_client(aws).scan(TableName=table, Select="COUNT")["Count"]


def clients_for(aws, n: int) -> list:
    """`n` independent clients (own connection pools), built from one session so the
    models load once; same retry config as production."""
    session = boto3.session.Session()
    return [session.client("dynamodb", region_name=aws.region, config=clients._CONFIG) for _ in range(n)]


def ledger_on(aws, client, **kw) -> DynamoDbLedger:
    return DynamoDbLedger(aws.region, aws.transactions_table, aws.equity_table, aws.orders_table, client=client, **kw)


# ----------------------------------------------------------------------------- races


@pytest.mark.parametrize("legs", [2, 101], ids=["2-legs", "101-legs"])
def test_runs_racing_record_plan_on_one_tick_leave_exactly_one_plan(aws_env, legs):
    """Every run plans other intents; one plan wins, whole, and every loser returns False
    only once that plan is visible (as SQLite's loser waits on the write lock)."""
    dynamodb_ledger(aws_env)  # the tables
    n = 16 if legs == 2 else 3
    ledgers = [ledger_on(aws_env, c) for c in clients_for(aws_env, n)]
    plans = [[intent(f"run{r}-leg{i:03d}") for i in range(legs)] for r in range(n)]

    def work(r):
        won = ledgers[r].record_plan(FLOW, KEY, plans[r])
        return won, [i.client_order_id for i in ledgers[r].intents(FLOW, KEY)]

    results = run_threads(n, work)
    winners = [r for r, (won, _) in enumerate(results) if won]
    assert len(winners) == 1, f"{len(winners)} runs recorded a plan for one tick"
    expected = [i.client_order_id for i in plans[winners[0]]]
    assert all(seen == expected for _, seen in results), "a run saw another plan, or none"
    fresh = ledger_on(aws_env, dynamodb_client(aws_env))
    assert [i.client_order_id for i in fresh.intents(FLOW, open_only=True)] == expected
    assert count_items(aws_env, aws_env.orders_table) == 1 + legs, "losers wrote nothing"


def test_runs_racing_claim_intent_on_one_leg_have_one_winner(aws_env):
    dynamodb_ledger(aws_env).record_plan(FLOW, KEY, [intent("leg")])
    ledgers = [ledger_on(aws_env, c) for c in clients_for(aws_env, 16)]
    wins = run_threads(16, lambda r: ledgers[r].claim_intent("leg", IntentStatus.PLANNED))
    assert wins.count(True) == 1
    assert ledgers[0].intents(FLOW, KEY)[0].status is IntentStatus.SUBMITTING


# ----------------------------------------------------------------------------- a writer that dies or stalls mid-plan


class DiesAtSecondChunk(DynamoDbLedger):
    """The process is killed after the first transaction of intents (of a >99 plan), or
    stalls there (`before_second`)."""

    transacts = 0
    before_second = None

    def _call(self, op, tables, **kwargs):
        if op == "transact_write_items":
            self.transacts += 1
            if self.transacts == 2:
                if self.before_second is None:
                    raise SystemExit("killed between two chunks of the plan")
                self.before_second()
        return super()._call(op, tables, **kwargs)


def plan_header(aws) -> dict:
    key = {"pk": {"S": f"plan#{FLOW}"}, "sk": {"S": KEY}}
    return dynamodb_client(aws).get_item(TableName=aws.orders_table, Key=key, ConsistentRead=True)["Item"]


def dies_mid_plan(aws, lease: float) -> tuple[list[OrderIntent], dict]:
    """A run dies after writing the first 99 of its 101 intents: its plan and header."""
    dead = DiesAtSecondChunk(aws.region, aws.transactions_table, aws.equity_table, aws.orders_table,
                             client=dynamodb_client(aws), plan_lease_seconds=lease)
    big = [intent(f"big-{n:03d}") for n in range(101)]
    with pytest.raises(SystemExit):
        dead.record_plan(FLOW, KEY, big)
    header = plan_header(aws)
    assert header["state"]["S"] == "pending"
    return big, header


def test_the_plan_of_a_writer_that_died_mid_plan_is_invisible(aws_env):
    dynamodb_ledger(aws_env)
    dies_mid_plan(aws_env, lease=30.0)
    rerun = ledger_on(aws_env, dynamodb_client(aws_env))
    assert not rerun.has_plan(FLOW, KEY) and rerun.latest_plan_key(FLOW) is None
    assert rerun.intents(FLOW, KEY) == [] and rerun.intents(FLOW) == []
    assert rerun.intents(FLOW, open_only=True) == [], "its 99 intents are in the open index, yet invisible"


def test_a_tick_whose_writer_died_is_taken_over_once_its_lease_ends(aws_env):
    dynamodb_ledger(aws_env)
    big, header = dies_mid_plan(aws_env, lease=1.0)
    rerun = ledger_on(aws_env, dynamodb_client(aws_env))
    assert rerun.record_plan(FLOW, KEY, [intent("big-000", qty=3.0), intent("new-1")])  # waits for the lease
    assert time.time() >= float(header["lease_until"]["N"]), "taken over before the dead writer's lease ended"
    assert [(i.client_order_id, i.qty) for i in rerun.intents(FLOW, KEY)] == [("big-000", 3.0), ("new-1", 10.0)]
    assert [i.client_order_id for i in rerun.intents(FLOW, open_only=True)] == ["big-000", "new-1"]
    assert not rerun.record_plan(FLOW, KEY, big)
    assert [t["S"] for t in plan_header(aws_env)["dead"]["L"]] == [header["token"]["S"]]


def test_a_stalled_writer_whose_lease_was_taken_cannot_touch_the_new_plan(aws_env):
    dynamodb_ledger(aws_env)
    other = ledger_on(aws_env, dynamodb_client(aws_env))
    slow = DiesAtSecondChunk(aws_env.region, aws_env.transactions_table, aws_env.equity_table,
                             aws_env.orders_table, client=dynamodb_client(aws_env), plan_lease_seconds=0.2)
    taken = {}

    def stall_then_lose_the_lease():
        time.sleep(0.3)  # the lease runs out while this writer is stalled
        taken["won"] = other.record_plan(FLOW, KEY, [intent("big-050", qty=1.0), intent("big-100")])

    slow.before_second = stall_then_lose_the_lease
    assert not slow.record_plan(FLOW, KEY, [intent(f"big-{n:03d}") for n in range(101)])
    assert taken["won"]
    assert [(i.client_order_id, i.qty) for i in other.intents(FLOW, KEY)] == [("big-050", 1.0), ("big-100", 10.0)]
    assert [i.client_order_id for i in slow.intents(FLOW, open_only=True)] == ["big-050", "big-100"]
    assert count_items(aws_env, aws_env.orders_table) == 1 + 99 + 1, "its second chunk was never written"


def test_an_intent_id_of_another_tick_is_refused_and_the_tick_left_free(aws_env):
    ledger = dynamodb_ledger(aws_env)
    assert ledger.record_plan(FLOW, KEY, [intent("shared")])
    ledger.claim_intent("shared", IntentStatus.PLANNED)
    with pytest.raises(ValueError, match="order intent 'shared' is already in the ledger"):
        ledger.record_plan(FLOW, "2025-11-26-10:30", [intent("new", key="2025-11-26-10:30"),
                                                      intent("shared", key="2025-11-26-10:30")])
    [kept] = ledger.intents(FLOW, KEY)
    assert (kept.partition_key, kept.status) == (KEY, IntentStatus.SUBMITTING)
    assert not ledger.has_plan(FLOW, "2025-11-26-10:30") and ledger.intents(FLOW, "2025-11-26-10:30") == []
    assert ledger.record_plan(FLOW, "2025-11-26-10:30", [intent("new", key="2025-11-26-10:30")]), \
        "the refused plan released its tick"


# ----------------------------------------------------------------------------- retries through a proxy


class FaultProxy(http.server.ThreadingHTTPServer):
    """Forwards DynamoDB calls to moto; `script[op]` lists what to do with the next calls
    of that operation: "throttle" (answer 400 ProvisionedThroughputExceededException, not
    forwarded) or "drop" (forward, then answer 500 instead of moto's answer, as a lost
    response after the write happened)."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urlsplit(upstream)
        self.script: dict[str, list[str]] = {}
        self.seen: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: FaultProxy

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        op = self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1]
        with self.server.lock:
            self.server.seen.append(op)
            todo = self.server.script.get(op) or []
            action = todo.pop(0) if todo else "forward"
        if action == "throttle":
            return self._error(400, "ProvisionedThroughputExceededException", "Rate of requests exceeds the allowed "
                                                                              "throughput (test proxy)")
        conn = http.client.HTTPConnection(self.server.upstream.hostname, self.server.upstream.port, timeout=30)
        conn.request("POST", self.path, body, headers=dict(self.headers))
        answer = conn.getresponse()
        data = answer.read()
        conn.close()
        if action == "drop":
            return self._error(500, "InternalServerError", "answer lost after the write (test proxy)")
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, code: str, message: str) -> None:
        data = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(aws_env, moto_server, monkeypatch):
    dynamodb_ledger(aws_env)  # tables, straight on moto
    server = FaultProxy(moto_server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_throttling_is_retried_by_the_client(aws_env, proxy):
    ledger = DynamoDbLedger(aws_env.region, aws_env.transactions_table, aws_env.equity_table, aws_env.orders_table)
    ledger.record_equity(EquitySnapshot(FLOW, KEY, "paper:paper", NOW, 1.0, 2.0, 1.0, {}))
    proxy.script = {"Query": ["throttle", "throttle"]}
    curve = ledger.equity_curve(FLOW)
    assert list(curve["equity"]) == [2.0]
    assert proxy.seen.count("Query") == 3, "two throttled attempts, then the one that answered"


def test_a_retried_write_whose_first_attempt_landed_is_recognised_as_ours(aws_env, proxy):
    """botocore resends a write whose answer was lost; the resend then fails its condition
    against our own first attempt. Each write must still report what it did."""
    ledger = DynamoDbLedger(aws_env.region, aws_env.transactions_table, aws_env.equity_table, aws_env.orders_table)
    proxy.script = {"PutItem": ["drop"], "TransactWriteItems": ["drop"]}  # the plan's lock, then its commit
    assert ledger.record_plan(FLOW, KEY, [intent("a"), intent("b")])
    assert proxy.seen.count("PutItem") == 2 and proxy.seen.count("TransactWriteItems") == 2
    assert [i.client_order_id for i in ledger.intents(FLOW, KEY)] == ["a", "b"]
    proxy.script = {"UpdateItem": ["drop"]}
    assert ledger.claim_intent("a", IntentStatus.PLANNED), "our own claim, resent, is still ours"
    assert not ledger.claim_intent("a", IntentStatus.PLANNED)
    proxy.script = {"PutItem": ["drop"]}
    assert ledger.record_transaction(fill("a")), "the fill was recorded by this call"
    assert not ledger.record_transaction(fill("a"))
    assert proxy.seen.count("UpdateItem") == 3 and proxy.seen.count("PutItem") == 5


# ----------------------------------------------------------------------------- setup errors and bad numbers


def test_a_missing_table_is_a_setup_error_naming_it_and_the_bootstrap_command(aws_env):
    ledger = DynamoDbLedger(aws_env.region, aws_env.transactions_table, aws_env.equity_table, aws_env.orders_table,
                            client=dynamodb_client(aws_env))
    cases = [(lambda: ledger.has_plan(FLOW, KEY), aws_env.orders_table),
             (lambda: ledger.record_plan(FLOW, KEY, [intent("a")]), aws_env.orders_table),
             (lambda: ledger.record_transaction(fill("t")), aws_env.transactions_table),
             (lambda: ledger.equity_curve(FLOW), aws_env.equity_table)]
    for call, table in cases:
        with pytest.raises(AwsSetupError) as err:
            call()
        assert f"DynamoDB table {table} does not exist" in str(err.value)
        assert "python -m trading_assets aws-bootstrap" in str(err.value)


def test_nan_and_infinite_numbers_are_refused_before_anything_is_written(aws_env):
    ledger = dynamodb_ledger(aws_env)
    with pytest.raises(ValueError, match=r"transaction 't1' price is nan: the DynamoDB ledger stores finite"):
        ledger.record_transaction(fill("t1", price=float("nan")))
    with pytest.raises(ValueError, match=r"order intent 'b' qty is inf"):
        ledger.record_plan(FLOW, KEY, [intent("a"), intent("b", qty=float("inf"))])
    with pytest.raises(ValueError, match="outside DynamoDB's number range"):
        ledger.record_equity(EquitySnapshot(FLOW, KEY, "paper:paper", NOW, 1e300, 1.0, 1.0, {}))
    for table in (aws_env.transactions_table, aws_env.orders_table, aws_env.equity_table):
        assert count_items(aws_env, table) == 0, f"{table} was written"
    assert not ledger.has_plan(FLOW, KEY)
    assert ledger.record_plan(FLOW, KEY, [intent("a")]), "a refused plan leaves the tick free"


def test_floats_round_trip_exactly(aws_env):
    ledger = dynamodb_ledger(aws_env)
    values = [0.1 + 0.2, 1 / 3, 1e-7, 123456789.123456789, 2.0**-60, 5e125]
    for n, v in enumerate(values):
        ledger.record_transaction(Transaction(f"t{n}", "a", FLOW, KEY, "X", Side.BUY, v, v, v, "fill", NOW))
    frame = ledger.transactions(flow=FLOW, partition_key=KEY).sort_values("transaction_id")
    assert list(frame["qty"]) == values and list(frame["price"]) == values


# ----------------------------------------------------------------------------- bootstrap, resource, request budget


def test_ensure_tables_creates_what_is_missing_once_and_refuses_a_foreign_table(aws_env):
    names = (aws_env.transactions_table, aws_env.equity_table, aws_env.orders_table)
    assert ensure_tables(aws_env.region, *names) == list(names)
    assert ensure_tables(aws_env.region, *names) == []
    ddb = dynamodb_client(aws_env)
    for name in names:
        table = ddb.describe_table(TableName=name)["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert all(g["IndexStatus"] == "ACTIVE" for g in table.get("GlobalSecondaryIndexes", []))
    ddb.delete_table(TableName=aws_env.equity_table)
    assert ensure_tables(aws_env.region, *names) == [aws_env.equity_table]
    ddb.create_table(TableName="foreign", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    with pytest.raises(AwsSetupError, match="DynamoDB table foreign exists with another shape"):
        ensure_tables(aws_env.region, aws_env.transactions_table, "foreign", aws_env.orders_table)


def test_the_resource_gives_one_working_ledger(aws_env):
    dynamodb_ledger(aws_env)
    resource = DynamoDbLedgerResource(region=aws_env.region, transactions_table=aws_env.transactions_table,
                                      equity_table=aws_env.equity_table, orders_table=aws_env.orders_table)
    ledger = resource.get()
    assert isinstance(ledger, DynamoDbLedger) and resource.get() is ledger
    assert ledger.record_plan(FLOW, KEY, []) and resource.get().has_plan(FLOW, KEY)


def test_a_ticks_calls_are_a_few_keyed_requests_and_never_a_scan(aws_env):
    ledger = dynamodb_ledger(aws_env, own_client=True)
    calls: list[str] = []
    ledger.client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))

    def cost(fn):
        calls.clear()
        fn()
        return dict(sorted({c: calls.count(c) for c in calls}.items()))

    assert cost(lambda: ledger.record_plan(FLOW, KEY, [intent("a"), intent("b")])) == {
        "PutItem": 1, "TransactWriteItems": 1}
    assert cost(lambda: ledger.intents(FLOW, KEY)) == {"GetItem": 1, "Query": 1}
    assert cost(lambda: ledger.intents(FLOW, KEY)) == {"Query": 1}, "a committed plan is remembered"
    assert cost(lambda: ledger.claim_intent("a", IntentStatus.PLANNED)) == {"UpdateItem": 1}
    assert cost(lambda: ledger.update_intent("a", status=IntentStatus.FILLED, filled_qty=10.0)) == {"UpdateItem": 1}
    assert cost(lambda: ledger.intents(FLOW, open_only=True)) == {"Query": 1}
    assert cost(lambda: ledger.record_transaction(fill("a"))) == {"PutItem": 1}
    assert cost(lambda: ledger.transactions(flow=FLOW, partition_key=KEY)) == {"Query": 1}
    assert cost(lambda: ledger.net_positions("paper:paper")) == {"Query": 1}
    assert cost(lambda: ledger.record_equity(EquitySnapshot(FLOW, KEY, "paper:paper", NOW, 1.0, 2.0, 1.0, {}))) == {
        "PutItem": 1}
    assert cost(lambda: ledger.equity_curve(FLOW)) == {"Query": 1}
    assert cost(lambda: ledger.latest_plan_key(FLOW)) == {"Query": 1}
    assert cost(lambda: ledger.record_plan(FLOW, KEY, [intent("c")])) == {"PutItem": 1}, "a rerun: one refused put"
