"""The ledger-shaped tick assets (`<flow>/transactions`, `<flow>/equity`) stored in the
ledger's own DynamoDB tables, per partition, as the very items the DynamoDB ledger writes
(same keys, same codec: `adapters.aws.dynamodb_ledger`). On AWS the assets' values then
live once, in the ledger, instead of twice (ledger + an S3 copy).

- `transactions`: the frame of one tick's fills (the ledger's `transactions()` columns).
  Stored: each row is upserted by `transaction_id`, unless the table already holds that
  fill as recorded later than the frame's `recorded_at` (the ledger moved on since the
  asset read it: the newer fill is kept). Rows are never deleted: a fill is a fact the
  ledger's positions are built from. Loaded: Query `by_tick` for (flow, partition).
- `equity`: the flow's equity curve up to the tick (the ledger's `equity_curve()`
  columns). Stored: each row upserted by (flow, partition_key), only where it differs.
  Loaded: Query `flow = :f AND partition_key <= :p`, ordered by as_of.

The flow is the asset key's first element, the kind its last. Reads are Queries, never
Scans; rows identical to the stored items are not rewritten.
"""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import dagster as dg
import pandas as pd
from pydantic import PrivateAttr

from trading_assets.adapters.aws import clients
from trading_assets.adapters.aws import dynamodb_ledger as codec

KINDS = ("transactions", "equity")


class DynamoDbLedgerIOManager(dg.ConfigurableIOManager):
    """Stores `<flow>/transactions` and `<flow>/equity` partitions as ledger items."""

    region: str
    transactions_table: str
    equity_table: str

    _ddb: Any = PrivateAttr(default=None)

    # ------------------------------------------------------------------ plumbing
    def _client(self) -> Any:
        if self._ddb is None:
            self._ddb = clients.client("dynamodb", self.region)
        return self._ddb

    def _call(self, op: str, table: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._client(), op)(TableName=table, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            setup = clients.explain(exc, f"DynamoDB table {table}")
            if setup is not None:
                raise setup from exc
            raise

    def _query(self, table: str, **kwargs: Any) -> list[dict]:
        items: list[dict] = []
        while True:
            page = self._call("query", table, **kwargs)
            items.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _target(context: dg.OutputContext | dg.InputContext) -> tuple[str, str, str]:
        """(flow, kind, partition key) of the asset partition being stored or loaded."""
        path = context.asset_key.path
        name = context.asset_key.to_user_string()
        if len(path) < 2 or path[-1] not in KINDS:
            raise TypeError(f"{name}: the DynamoDB ledger IO manager stores <flow>/transactions and "
                            f"<flow>/equity assets only, not {name!r}")
        if not context.has_asset_partitions:
            raise TypeError(f"{name}: the DynamoDB ledger IO manager stores partitioned (per-tick) assets only")
        return path[0], path[-1], context.asset_partition_key

    # ------------------------------------------------------------------ store
    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        flow, kind, partition_key = self._target(context)
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                            "the DynamoDB ledger IO manager stores pandas DataFrames only")
        columns = codec.TRANSACTION_COLUMNS if kind == "transactions" else codec.EQUITY_COLUMNS
        required = [c for c in columns if c != "recorded_at"]
        missing = [c for c in required if c not in obj.columns]
        if missing:
            raise TypeError(f"{context.asset_key.to_user_string()}'s frame lacks the ledger columns {missing}")
        if kind == "transactions":
            table = self.transactions_table
            written, skipped = self._store_transactions(flow, partition_key, obj)
        else:
            table, skipped = self.equity_table, 0
            written = self._store_equity(flow, partition_key, obj)
        context.add_output_metadata({
            "table": table,
            "items": len(obj),
            "items_written": written,
            "items_kept_newer": skipped,
        })

    def _store_transactions(self, flow: str, partition_key: str, frame: pd.DataFrame) -> tuple[int, int]:
        table = self.transactions_table
        stored = {i["transaction_id"]["S"]: i for i in self._query(
            table, IndexName="by_tick", KeyConditionExpression="flow_tick = :t",
            ExpressionAttributeValues={":t": {"S": codec.flow_tick(flow, partition_key)}})}
        written = skipped = 0
        now = codec.now_iso()
        for row in frame.to_dict("records"):
            txn, recorded_at = codec.transaction_from_row(row)
            if (txn.flow, txn.partition_key) != (flow, partition_key):
                raise ValueError(f"transaction {txn.transaction_id!r} is for {txn.flow} {txn.partition_key}, "
                                 f"not the partition being stored ({flow} {partition_key})")
            item = codec.transaction_item(txn, recorded_at=recorded_at or now)
            old = stored.get(txn.transaction_id)
            if old is not None and codec.transaction_record(old) == codec.transaction_record(item):
                continue
            try:
                self._call("put_item", table, Item=item,
                           ConditionExpression="attribute_not_exists(transaction_id) OR recorded_at <= :r",
                           ExpressionAttributeValues={":r": item["recorded_at"]})
                written += 1
            except botocore.exceptions.ClientError as exc:
                if clients.error_code(exc) != "ConditionalCheckFailedException":
                    raise
                skipped += 1  # the ledger recorded this fill again after the asset read it
        return written, skipped

    def _store_equity(self, flow: str, partition_key: str, frame: pd.DataFrame) -> int:
        table = self.equity_table
        stored = {i["partition_key"]["S"]: i for i in self._curve_items(flow, partition_key)}
        now = codec.now_iso()
        items = []
        for row in frame.to_dict("records"):
            snapshot = codec.equity_from_row(flow, row)
            if snapshot.partition_key > partition_key:
                raise ValueError(f"equity row for {snapshot.partition_key} is after the partition being "
                                 f"stored ({partition_key}): the curve of a tick ends at that tick")
            item = codec.equity_item(snapshot, recorded_at=now)
            old = stored.get(snapshot.partition_key)
            if old is None or codec.equity_record(old) != codec.equity_record(item):
                items.append(item)
        for item in items:
            self._call("put_item", table, Item=item)
        return len(items)

    # ------------------------------------------------------------------ load
    def _curve_items(self, flow: str, partition_key: str) -> list[dict]:
        return self._query(self.equity_table, KeyConditionExpression="flow = :f AND partition_key <= :p",
                           ExpressionAttributeValues={":f": {"S": flow}, ":p": {"S": partition_key}},
                           ConsistentRead=True)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        flow, kind, partition_key = self._target(context)
        if kind == "transactions":
            return codec.transactions_frame(self._query(
                self.transactions_table, IndexName="by_tick", KeyConditionExpression="flow_tick = :t",
                ExpressionAttributeValues={":t": {"S": codec.flow_tick(flow, partition_key)}}))
        items = self._curve_items(flow, partition_key)
        if items:
            return codec.equity_frame(items)
        # No row up to this tick. The equity asset's value is then the flow's curve filtered
        # down to nothing: typed like a curve if the flow has recorded any equity at all.
        later = self._call("query", self.equity_table, KeyConditionExpression="flow = :f",
                           ExpressionAttributeValues={":f": {"S": flow}}, Limit=1, Select="COUNT")
        return codec.equity_frame([], typed_when_empty=bool(later.get("Count")))
