"""Ledger resources: SQLite locally (DynamoDB on AWS comes with the AWS world)."""

from __future__ import annotations

from trading_assets.core.ports import Ledger
from trading_assets.resources.base import LedgerResource


class SqliteLedgerResource(LedgerResource):
    path: str

    def get(self) -> Ledger:
        from trading_assets.adapters.sqlite.ledger import SqliteLedger

        return SqliteLedger(self.path)
