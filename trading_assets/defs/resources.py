"""Which resources the flows run with, chosen by one switch: TRADING_ENV (default `local`).

`local` is the embedded world: replay market data, the paper broker, a SQLite ledger and
Parquet files, all under TRADING_DATA_DIR (default `./.trading_data`). It works offline
with no credentials. Each flow has its own broker key (`<flow>_broker`): paper unless
`TRADING_BROKER_<FLOW>` names a real one (credentials then come from the environment).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from trading_assets import settings
from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
from trading_assets.resources.brokers import broker_key, broker_resource_for_flow
from trading_assets.resources.io_managers import LocalParquetIOManager
from trading_assets.resources.ledger import SqliteLedgerResource
from trading_assets.resources.market_data import ReplayMarketDataResource
from trading_assets.resources.trading import TradingSettings


def local_resources(base: Path | None = None, **overrides: object) -> dict[str, object]:
    """The embedded world under `base` (default TRADING_DATA_DIR)."""
    base = Path(base) if base is not None else settings.data_dir()
    resources: dict[str, object] = {
        "market_data": ReplayMarketDataResource(),
        **{broker_key(flow): broker_resource_for_flow(flow, "local", base=base) for flow in settings.FLOWS},
        "ledger": SqliteLedgerResource(path=str(base / "ledger.sqlite")),
        "io_manager": LocalParquetIOManager(base_dir=str(base / "assets")),
        "trading_settings": TradingSettings(),
        "ema_concentration": EmaConcentrationSettings(),
    }
    resources.update(overrides)
    return resources


def resources_for(env: str) -> dict[str, object]:
    if env == "local":
        return local_resources()
    raise ValueError(f"no resources for TRADING_ENV={env!r}")


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources=resources_for(settings.trading_env()))
