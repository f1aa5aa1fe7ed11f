"""The AWS world's shape, in one place: DynamoDB tables, the alert queue, the topic.

`aws-bootstrap` creates these with boto3 and the CDK stack in deploy/ declares the same
keys from this module, so the two cannot drift apart.

Tables (PAY_PER_REQUEST), `<prefix>` from TRADING_DDB_TABLE_PREFIX:

- `<prefix>-transactions` (the seeds' TransactionTable): one item per fill or baseline
  position, key `transaction_id`. GSIs: `by_tick` (`flow_tick` = "flow#partition_key",
  `transaction_id`): one tick's fills; `by_account` (`account`, `executed_at`): positions;
  `by_flow` (`flow`, `executed_at`).
- `<prefix>-equity` (the seeds' EquityTable): one item per (flow, partition_key).
- `<prefix>-orders`: plans, order intents and account baselines, generic keys `pk`/`sk`:
  plan `pk="plan#<flow>"`, `sk=<partition_key>`; intent `pk="intent#<client_order_id>"`,
  `sk="intent"`; baseline `pk="baseline#<account>"`, `sk="baseline"`. GSIs: `by_tick`
  (`gsi1pk` = "flow#partition_key", `gsi1sk` = position in the plan) and the sparse
  `open_by_flow` (`gsi2pk` = flow while the intent is not final, `gsi2sk`).
"""

from __future__ import annotations

from typing import Any

S = "S"


def _gsi(name: str, pk: str, sk: str) -> dict[str, Any]:
    return {
        "IndexName": name,
        "KeySchema": [{"AttributeName": pk, "KeyType": "HASH"}, {"AttributeName": sk, "KeyType": "RANGE"}],
        "Projection": {"ProjectionType": "ALL"},
    }


def _attrs(*names: str) -> list[dict[str, str]]:
    return [{"AttributeName": n, "AttributeType": S} for n in names]


def table_specs(transactions: str, equity: str, orders: str) -> dict[str, dict[str, Any]]:
    """`create_table` keyword arguments per table name (BillingMode PAY_PER_REQUEST)."""
    return {
        transactions: {
            "TableName": transactions,
            "KeySchema": [{"AttributeName": "transaction_id", "KeyType": "HASH"}],
            "AttributeDefinitions": _attrs("transaction_id", "flow_tick", "account", "executed_at", "flow"),
            "GlobalSecondaryIndexes": [
                _gsi("by_tick", "flow_tick", "transaction_id"),
                _gsi("by_account", "account", "executed_at"),
                _gsi("by_flow", "flow", "executed_at"),
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
        equity: {
            "TableName": equity,
            "KeySchema": [{"AttributeName": "flow", "KeyType": "HASH"},
                          {"AttributeName": "partition_key", "KeyType": "RANGE"}],
            "AttributeDefinitions": _attrs("flow", "partition_key"),
            "BillingMode": "PAY_PER_REQUEST",
        },
        orders: {
            "TableName": orders,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            "AttributeDefinitions": _attrs("pk", "sk", "gsi1pk", "gsi1sk", "gsi2pk", "gsi2sk"),
            "GlobalSecondaryIndexes": [
                _gsi("by_tick", "gsi1pk", "gsi1sk"),
                _gsi("open_by_flow", "gsi2pk", "gsi2sk"),
            ],
            "BillingMode": "PAY_PER_REQUEST",
        },
    }


#: The alert queue (FIFO; deduplication id = alert id) and its dead-letter queue.
QUEUE_VISIBILITY_TIMEOUT_SECONDS = 30
QUEUE_MAX_RECEIVES = 5  # then the message moves to the DLQ
QUEUE_RETENTION_SECONDS = 4 * 24 * 3600
DLQ_RETENTION_SECONDS = 14 * 24 * 3600

#: The notification topic's default name (TRADING_SNS_TOPIC_ARN points at it).
TOPIC_NAME = "trading-events"
