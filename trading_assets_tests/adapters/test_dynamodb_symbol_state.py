"""The DynamoDB state store's own cases (the shared ones are in
contract/test_symbol_state_contract.py): setup errors, the item layout in the orders
table, a botocore retry whose first attempt landed (through a proxy that loses the
answer), transaction conflicts, the request budget of each call.

All against a real moto server (`aws_env`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import botocore.exceptions
import pytest

from trading_assets.adapters.aws.clients import AwsSetupError
from trading_assets.adapters.aws.dynamodb_symbol_state import DynamoDbSymbolStateStore
from trading_assets.core.symbol_state import StoredState
from trading_assets_tests.adapters.test_dynamodb_ledger import proxy  # noqa: F401  (fixture)
from trading_assets_tests.contract.test_ledger_contract import dynamodb_client
from trading_assets_tests.contract.test_symbol_state_contract import FLOW, SYMBOL, dynamodb_factory, transition


def table_items(aws) -> list[dict]:
    return dynamodb_client(aws).scan(TableName=aws.orders_table, ConsistentRead=True)["Items"]


@pytest.fixture
def store(aws_env) -> DynamoDbSymbolStateStore:
    return dynamodb_factory(aws_env)()


def test_a_missing_table_is_a_setup_error_naming_it_and_the_bootstrap_command(aws_env):
    store = DynamoDbSymbolStateStore(aws_env.region, aws_env.orders_table, client=dynamodb_client(aws_env))
    for call in (lambda: store.load(FLOW, SYMBOL), lambda: store.transition_for(FLOW, "a1"),
                 lambda: store.history(FLOW, SYMBOL), lambda: store.commit(0, transition("a1", 1))):
        with pytest.raises(AwsSetupError) as err:
            call()
        assert f"DynamoDB table {aws_env.orders_table} does not exist" in str(err.value)
        assert "python -m trading_assets aws-bootstrap" in str(err.value)


def test_the_items_are_the_documented_layout_in_the_orders_table(aws_env, store):
    t = transition("a1", 1, {"position": "LONG", "ids": ["a1"]}, details={"instrument": "MNQZ5"},
                   actions=("CLOSE_SHORT", "OPEN_LONG"), at=datetime(2025, 11, 26, 16, 0, tzinfo=UTC))
    assert store.commit(0, t)
    items = {(i["pk"]["S"], i["sk"]["S"]): i for i in table_items(aws_env)}
    assert set(items) == {(f"state#{FLOW}#{SYMBOL}", "state"),
                          (f"state#{FLOW}#{SYMBOL}", "transition#00000000000000000001"),
                          (f"transition#{FLOW}#a1", "transition")}
    state = items[(f"state#{FLOW}#{SYMBOL}", "state")]
    assert state["version"] == {"N": "1"} and state["alert_id"] == {"S": "a1"}
    assert state["state"] == {"S": '{"ids":["a1"],"position":"LONG"}'}, "canonical JSON"
    by_alert = items[(f"transition#{FLOW}#a1", "transition")]
    history = items[(f"state#{FLOW}#{SYMBOL}", "transition#00000000000000000001")]
    assert {k: v for k, v in by_alert.items() if k not in ("pk", "sk")} == \
        {k: v for k, v in history.items() if k not in ("pk", "sk")}
    assert by_alert["recorded_at"] == {"S": "2025-11-26T16:00:00+00:00"}
    assert by_alert["actions"] == {"L": [{"S": "CLOSE_SHORT"}, {"S": "OPEN_LONG"}]}
    assert by_alert["state_before"] == {"NULL": True} and by_alert["version_after"] == {"N": "1"}
    assert not any(k.startswith("gsi") for i in items.values() for k in i), "state items stay out of the indexes"


def test_history_sorts_by_version_past_nine(store):
    for n in range(1, 13):
        assert store.commit(n - 1, transition(f"a{n}", n))
    assert [t.version_after for t in store.history(FLOW, SYMBOL)] == list(range(12, 0, -1))
    assert [t.version_after for t in store.history(FLOW, SYMBOL, limit=3)] == [12, 11, 10]


def test_a_flow_name_with_the_key_separator_is_refused(store):
    with pytest.raises(ValueError, match="may not contain '#'"):
        store.commit(0, transition("a1", 1, flow="trend#dmi"))
    with pytest.raises(ValueError, match="may not contain '#'"):
        store.load("trend#dmi", SYMBOL)


def test_history_ahead_of_a_deleted_state_item_is_an_error_not_an_overwrite(aws_env, store):
    assert store.commit(0, transition("a1", 1))
    dynamodb_client(aws_env).delete_item(TableName=aws_env.orders_table,
                                         Key={"pk": {"S": f"state#{FLOW}#{SYMBOL}"}, "sk": {"S": "state"}})
    with pytest.raises(RuntimeError, match="deleted or rewritten outside this store"):
        store.commit(0, transition("a2", 1))
    assert store.transition_for(FLOW, "a2") is None and store.history(FLOW, SYMBOL)[0].alert_id == "a1"


# ----------------------------------------------------------------------------- retries


def test_a_retried_commit_whose_first_attempt_landed_is_recognised_as_ours(aws_env, proxy):  # noqa: F811
    """The proxy forwards the commit and loses moto's answer (a 500): botocore resends it,
    and the resend is cancelled by our own first attempt. The commit still reports True,
    and it is written once."""
    store = DynamoDbSymbolStateStore(aws_env.region, aws_env.orders_table)  # through the proxy
    first = transition("a1", 1, {"n": 1})
    proxy.script = {"TransactWriteItems": ["drop"]}
    assert store.commit(0, first), "our own commit, resent, is ours"
    assert proxy.seen.count("TransactWriteItems") == 2, "the answer was lost and the commit resent"
    assert proxy.seen.count("GetItem") == 0, "the cancellation carried the recorded transition"
    assert store.load(FLOW, SYMBOL) == StoredState(FLOW, SYMBOL, {"n": 1}, 1)
    assert store.history(FLOW, SYMBOL) == [first]
    proxy.script = {"TransactWriteItems": ["drop"]}
    assert store.commit(1, transition("a2", 2, {"n": 2}))
    assert not store.commit(1, transition("a2", 2, {"n": 2}, at=datetime.now(UTC) + timedelta(seconds=1))), \
        "another transition for the recorded alert is not ours"
    assert store.load(FLOW, SYMBOL).version == 2


class Conflicting(DynamoDbSymbolStateStore):
    """Answers the first `conflicts` commits as AWS does when another transaction holds
    one of the items: cancelled, reason TransactionConflict, nothing written."""

    def __init__(self, *args, conflicts: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.conflicts = conflicts
        self.attempts = 0

    def _call(self, op, **kwargs):
        if op == "transact_write_items":
            self.attempts += 1
            if self.attempts <= self.conflicts:
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": "TransactionCanceledException", "Message": "conflict (test)"},
                     "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}, {"Code": "None"}]},
                    "TransactWriteItems")
        return super()._call(op, **kwargs)


def test_a_transaction_conflict_is_retried_then_refused(aws_env, store):
    client = store.client
    once = Conflicting(aws_env.region, aws_env.orders_table, client=client, conflicts=1)
    assert once.commit(0, transition("a1", 1)) and once.attempts == 2
    always = Conflicting(aws_env.region, aws_env.orders_table, client=client, conflicts=99)
    assert not always.commit(1, transition("a2", 2)), "still conflicting: refused, reload and re-apply"
    assert always.attempts == 5
    assert store.load(FLOW, SYMBOL).version == 1 and store.transition_for(FLOW, "a2") is None


# ----------------------------------------------------------------------------- request budget


def test_each_call_is_one_or_two_keyed_requests(store):
    calls: list[str] = []
    store.client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))

    def cost(fn):
        calls.clear()
        fn()
        return dict(sorted({c: calls.count(c) for c in calls}.items()))

    first = transition("a1", 1)
    assert cost(lambda: store.load(FLOW, SYMBOL)) == {"GetItem": 1}
    assert cost(lambda: store.commit(0, first)) == {"TransactWriteItems": 1}
    assert cost(lambda: store.load(FLOW, SYMBOL)) == {"GetItem": 1}
    assert cost(lambda: store.transition_for(FLOW, "a1")) == {"GetItem": 1}
    assert cost(lambda: store.history(FLOW, SYMBOL)) == {"Query": 1}
    assert cost(lambda: store.commit(0, first)) == {"TransactWriteItems": 1}, "the identical retry"
    assert cost(lambda: store.commit(1, transition("a1", 2))) == {"TransactWriteItems": 1}, "an alert recorded"
    assert cost(lambda: store.commit(0, transition("a2", 1))) == {"GetItem": 1, "TransactWriteItems": 1}, \
        "a lost race reads the alert's item back"
