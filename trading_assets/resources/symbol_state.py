"""The per-symbol state store of alert-driven flows (`core.symbol_state`): SQLite
locally, the orders table in DynamoDB in aws mode."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg

from trading_assets.core.symbol_state import SymbolStateStore


class SymbolStateResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def get(self) -> SymbolStateStore: ...


class SqliteSymbolStateResource(SymbolStateResource):
    path: str

    def get(self) -> SymbolStateStore:
        from trading_assets.adapters.sqlite.symbol_state import SqliteSymbolStateStore

        return SqliteSymbolStateStore(self.path)


class DynamoDbSymbolStateResource(SymbolStateResource):
    region: str
    table: str

    def get(self) -> SymbolStateStore:
        from trading_assets.adapters.aws.dynamodb_symbol_state import DynamoDbSymbolStateStore

        return DynamoDbSymbolStateStore(self.region, self.table)


def symbol_state_resource(env: str, *, base: Path | None = None) -> SymbolStateResource:
    """`symbol_state.sqlite` under `base` (default TRADING_DATA_DIR) locally; the
    `<prefix>-orders` table in aws mode."""
    from trading_assets import settings

    if env == "local":
        return SqliteSymbolStateResource(path=str((base or settings.data_dir()) / "symbol_state.sqlite"))
    if env == "aws":
        aws = settings.aws()
        return DynamoDbSymbolStateResource(region=aws.region, table=aws.orders_table)
    raise ValueError(f"no symbol state store for TRADING_ENV={env!r}")
