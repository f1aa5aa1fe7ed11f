"""Ledger resources: SQLite locally, DynamoDB on AWS."""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

from trading_assets.core.ports import Ledger
from trading_assets.resources.base import HidesSecrets, LedgerResource


class SqliteLedgerResource(LedgerResource):
    path: str

    def get(self) -> Ledger:
        from trading_assets.adapters.sqlite.ledger import SqliteLedger

        return SqliteLedger(self.path)


class DynamoDbLedgerResource(HidesSecrets, LedgerResource):
    """The ledger over the AWS world's three DynamoDB tables (`settings.AwsSettings`
    names them; `python -m trading_assets aws-bootstrap` creates them). Credentials come
    from boto3's own chain. One adapter (and its boto3 client, which is thread-safe) per
    resource instance."""

    region: str
    transactions_table: str
    equity_table: str
    orders_table: str

    _ledger: Any = PrivateAttr(default=None)

    def get(self) -> Ledger:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        if self._ledger is None:
            from trading_assets.adapters.aws.dynamodb_ledger import DynamoDbLedger

            self._ledger = DynamoDbLedger(self.region, self.transactions_table, self.equity_table,
                                          self.orders_table)
        return self._ledger
