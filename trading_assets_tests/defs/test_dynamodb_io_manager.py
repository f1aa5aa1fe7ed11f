"""The DynamoDB ledger IO manager: `<flow>/transactions` and `<flow>/equity` partitions
stored as the ledger's own items, through real `dg.materialize` runs against moto.

Two tiny assets stand in for the EMA flow's: they return exactly what the real ones
return (a tick's fills from `ledger.transactions(flow, partition)`, the equity curve up to
the tick's bar end), read from a SQLite or a DynamoDB ledger; the equity asset takes the
transactions as an input, and a downstream `report` asset takes both, so every run also
loads both partitions back through the IO manager."""


from datetime import UTC, datetime
from typing import ClassVar

import dagster as dg
import pandas as pd
import pytest

from trading_assets.adapters.aws import clients
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.ports import EquitySnapshot, Ledger, Side, Transaction
from trading_assets.resources.dynamodb_io_manager import DynamoDbLedgerIOManager
from trading_assets_tests.contract.test_ledger_contract import dynamodb_client, dynamodb_ledger

FLOW, ACCT = "ema_concentration", "paper:paper"
K0, K1, K2, K3 = "2025-11-26-09:30", "2025-11-26-10:00", "2025-11-26-10:30", "2025-11-26-11:00"
BAR_END = {K0: datetime(2025, 11, 26, 15, 0, tzinfo=UTC), K1: datetime(2025, 11, 26, 15, 30, tzinfo=UTC),
           K2: datetime(2025, 11, 26, 16, 0, tzinfo=UTC), K3: datetime(2025, 11, 26, 16, 30, tzinfo=UTC)}
parts = dg.StaticPartitionsDefinition([K0, K1, K2, K3])
TXNS, EQUITY = dg.AssetKey([FLOW, "transactions"]), dg.AssetKey([FLOW, "equity"])


class Source:
    """Where the assets read their frames, and what they returned and received."""

    ledger: Ledger | None = None
    returned: ClassVar[dict[tuple[str, str], pd.DataFrame]] = {}
    received: ClassVar[dict[str, pd.DataFrame]] = {}
    loaded: ClassVar[dict[tuple[str, str], pd.DataFrame]] = {}
    stale_transactions: pd.DataFrame | None = None  # return this instead of reading the ledger
    instance: dg.DagsterInstance | None = None


@dg.asset(key=TXNS, partitions_def=parts)
def transactions(context: dg.AssetExecutionContext) -> pd.DataFrame:
    if Source.stale_transactions is not None:
        fills = Source.stale_transactions
    else:
        fills = Source.ledger.transactions(flow=FLOW, partition_key=context.partition_key)
        fills = fills[fills["kind"] == "fill"].reset_index(drop=True)
    Source.returned[("transactions", context.partition_key)] = fills
    return fills


@dg.asset(key=EQUITY, partitions_def=parts, ins={"transactions": dg.AssetIn(key=TXNS)})
def equity(context: dg.AssetExecutionContext, transactions: pd.DataFrame) -> pd.DataFrame:
    Source.received[context.partition_key] = transactions
    curve = Source.ledger.equity_curve(FLOW)
    curve = curve[curve["as_of"] <= pd.Timestamp(BAR_END[context.partition_key])].reset_index(drop=True)
    Source.returned[("equity", context.partition_key)] = curve
    return curve


@dg.asset(key=[FLOW, "report"], partitions_def=parts, io_manager_key="mem",
          ins={"transactions": dg.AssetIn(key=TXNS), "equity": dg.AssetIn(key=EQUITY)})
def report(context: dg.AssetExecutionContext, transactions: pd.DataFrame, equity: pd.DataFrame) -> int:
    Source.loaded[("transactions", context.partition_key)] = transactions
    Source.loaded[("equity", context.partition_key)] = equity
    return len(transactions)


ASSETS = [transactions, equity, report]


@pytest.fixture
def io(aws_env) -> DynamoDbLedgerIOManager:
    dynamodb_ledger(aws_env)  # the tables
    Source.ledger, Source.returned, Source.received, Source.loaded = None, {}, {}, {}
    Source.stale_transactions = None
    Source.instance = dg.DagsterInstance.ephemeral()  # one per test: building one costs ~0.1 s
    return DynamoDbLedgerIOManager(region=aws_env.region, transactions_table=aws_env.transactions_table,
                                   equity_table=aws_env.equity_table)


def materialize(io, key: str) -> dg.ExecuteInProcessResult:
    result = dg.materialize(ASSETS, partition_key=key, resources={"io_manager": io, "mem": dg.InMemoryIOManager()},
                            instance=Source.instance)
    assert result.success
    return result


def load(io, asset_key: dg.AssetKey, key: str) -> pd.DataFrame:
    return dg.Definitions(assets=ASSETS, resources={"io_manager": io, "mem": dg.InMemoryIOManager()}).load_asset_value(
        asset_key, partition_key=key, instance=Source.instance)


def output_metadata(result: dg.ExecuteInProcessResult, asset_key: dg.AssetKey) -> dict:
    [mat] = [m for m in result.asset_materializations_for_node(asset_key.to_python_identifier())]
    return {k: v.value for k, v in mat.metadata.items()}


def fill(tid, key, qty=10.0, price=50.0, minute=0, cid="same"):
    return Transaction(tid, ACCT, FLOW, key, "TQQQ", Side.BUY, qty, price, 0.1, "fill",
                       BAR_END[key].replace(minute=minute, second=1), tid if cid == "same" else cid)


def seed(ledger: Ledger) -> None:
    """K0: no equity before it; K1: two fills, equity; K2: no fills, no equity; K3: one fill, equity."""
    ledger.record_baseline(ACCT, [Transaction(f"baseline:{ACCT}:AAPL", ACCT, FLOW, "baseline", "AAPL", Side.BUY,
                                              3.0, 10.0, 0.0, "baseline", BAR_END[K0])])
    ledger.record_transaction(fill("f1", K1, qty=0.1 + 0.2, price=1 / 3, minute=5))
    ledger.record_transaction(fill("f2", K1, minute=1, cid=None))
    ledger.record_transaction(fill("f3", K3, qty=2.5))
    for key, value in ((K1, 100.0 / 7), (K3, 101.5)):
        ledger.record_equity(EquitySnapshot(FLOW, key, ACCT, BAR_END[key], value - 1, value, value - 1,
                                            {"TQQQ": 10.3, "AAPL": 3.0}))


def count(aws, table: str) -> int:
    return dynamodb_client(aws).scan(TableName=table, Select="COUNT")["Count"]


def test_each_partition_of_both_assets_loads_back_as_it_was_returned(io, tmp_path):
    """Frames of the SQLite ledger (the assets' values in the local world) round-trip
    through the DynamoDB items: same columns, dtypes, order, values; empty ones too."""
    Source.ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    seed(Source.ledger)
    for key in (K1, K2, K3, K0):  # K0 last: a backfill of a tick older than every recorded equity
        result = materialize(io, key)
        pd.testing.assert_frame_equal(Source.received[key], Source.returned[("transactions", key)])
        meta = output_metadata(result, TXNS)
        assert meta["table"] == io.transactions_table and meta["items"] == len(Source.returned[("transactions", key)])
        assert output_metadata(result, EQUITY)["table"] == io.equity_table
    assert set(Source.loaded) == set(Source.returned)
    for kind_key, frame in Source.returned.items():
        pd.testing.assert_frame_equal(Source.loaded[kind_key], frame, obj=str(kind_key))
    pd.testing.assert_frame_equal(load(io, TXNS, K1), Source.returned[("transactions", K1)])
    pd.testing.assert_frame_equal(load(io, EQUITY, K2), Source.returned[("equity", K2)])
    assert len(Source.returned[("transactions", K1)]) == 2 and Source.returned[("transactions", K2)].empty
    assert Source.returned[("equity", K0)].empty and list(Source.returned[("equity", K2)]["partition_key"]) == [K1]
    assert list(Source.loaded[("equity", K3)]["partition_key"]) == [K1, K3]
    assert str(Source.loaded[("equity", K0)]["equity"].dtype) == "float64", "typed like the curve it was cut from"


def test_a_row_written_by_the_ledger_and_by_the_io_manager_is_one_item(io, aws_env, tmp_path):
    ledger = dynamodb_ledger(aws_env)
    Source.ledger = ledger
    seed(ledger)
    before = {t: count(aws_env, t) for t in (aws_env.transactions_table, aws_env.equity_table)}
    results = {key: materialize(io, key) for key in (K1, K3)}
    assert {t: count(aws_env, t) for t in before} == before
    assert output_metadata(results[K1], TXNS)["items_written"] == 0, "identical rows are not rewritten"
    assert output_metadata(results[K3], EQUITY)["items_written"] == 0
    pd.testing.assert_frame_equal(Source.loaded[("transactions", K1)], ledger.transactions(flow=FLOW, partition_key=K1))
    pd.testing.assert_frame_equal(Source.loaded[("equity", K3)], ledger.equity_curve(FLOW))
    # ...and a fill the IO manager writes is the ledger's fill: one set of items
    other = SqliteLedger(tmp_path / "other.sqlite")
    other.record_transaction(fill("f4", K2, qty=7.0))
    Source.ledger = other
    materialize(io, K2)
    pd.testing.assert_frame_equal(ledger.transactions(flow=FLOW, partition_key=K2),
                                  other.transactions(flow=FLOW, partition_key=K2))
    assert ledger.net_positions(ACCT) == {"AAPL": 3.0, "TQQQ": 0.1 + 0.2 + 10.0 + 2.5 + 7.0}


def test_overwriting_a_partition_updates_its_items_and_never_loses_a_newer_fill(io, aws_env, tmp_path):
    Source.ledger = led = SqliteLedger(tmp_path / "ledger.sqlite")
    led.record_transaction(fill("f1", K1, qty=4.0))  # partly filled at the first run
    led.record_equity(EquitySnapshot(FLOW, K1, ACCT, BAR_END[K1], 90.0, 100.0, 90.0, {"TQQQ": 4.0}))
    materialize(io, K1)
    partial = Source.returned[("transactions", K1)]
    led.record_transaction(fill("f1", K1, qty=10.0, price=50.25))  # the rest filled; the rerun sees it
    led.record_equity(EquitySnapshot(FLOW, K1, ACCT, BAR_END[K1], 0.0, 100.5, 0.0, {"TQQQ": 10.0}))
    result = materialize(io, K1)
    assert output_metadata(result, TXNS)["items_written"] == 1 and output_metadata(result, EQUITY)["items_written"] == 1
    pd.testing.assert_frame_equal(Source.loaded[("transactions", K1)], led.transactions(flow=FLOW, partition_key=K1))
    assert Source.loaded[("transactions", K1)]["qty"].tolist() == [10.0]
    assert Source.loaded[("equity", K1)]["equity"].tolist() == [100.5]
    assert count(aws_env, io.transactions_table) == 1 and count(aws_env, io.equity_table) == 1
    Source.stale_transactions = partial  # a run that read the ledger before the rest of the fill
    result = materialize(io, K1)
    assert output_metadata(result, TXNS)["items_kept_newer"] == 1
    assert Source.loaded[("transactions", K1)]["qty"].tolist() == [10.0], "a stale frame never overwrites a newer fill"
    assert load(io, TXNS, K1)["qty"].tolist() == [10.0]


def test_loading_is_a_query_never_a_scan(io, tmp_path, monkeypatch):
    calls: list[str] = []
    real = clients.client

    def counting_client(service, region):
        made = real(service, region)
        made.meta.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
        return made

    monkeypatch.setattr(clients, "client", counting_client)
    Source.ledger = SqliteLedger(tmp_path / "ledger.sqlite")
    seed(Source.ledger)
    io = DynamoDbLedgerIOManager(region=io.region, transactions_table=io.transactions_table,
                                 equity_table=io.equity_table)
    materialize(io, K3)
    calls.clear()
    assert len(load(io, TXNS, K3)) == 1 and len(load(io, EQUITY, K3)) == 2
    assert calls == ["Query", "Query"]
    calls.clear()
    assert load(io, EQUITY, K0).empty
    assert calls == ["Query", "Query"], "an empty curve: the bounded query, then one to type it"


def test_other_assets_and_unpartitioned_ones_are_a_type_error(io):
    frame = pd.DataFrame({"x": [1.0]})
    with pytest.raises(TypeError, match="stores <flow>/transactions and <flow>/equity assets only"):
        io.handle_output(dg.build_output_context(asset_key=dg.AssetKey([FLOW, "orders"]), partition_key=K1), frame)
    with pytest.raises(TypeError, match="partitioned"):
        io.handle_output(dg.build_output_context(asset_key=TXNS), frame)
    with pytest.raises(TypeError, match="lacks the ledger columns"):
        io.handle_output(dg.build_output_context(asset_key=TXNS, partition_key=K1), frame)
