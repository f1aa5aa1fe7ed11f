"""Resources, chosen by one switch: TRADING_ENV (default `local`).

`local` is the embedded world: replay market data, the paper broker, a SQLite ledger and
Parquet files, all under TRADING_DATA_DIR (default `./.trading_data`). It works offline
with no credentials. Assets depend on the abstract bases below (`BrokerResource`, ...),
so a production resource only has to implement `get()`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import dagster as dg

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.replay.market_data import ReplayMarketData
from trading_assets.adapters.safety import env_flag
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.core.ports import Broker, Ledger, MarketData
from trading_assets.defs.io_managers import LocalParquetIOManager

ENVIRONMENTS = ("local",)


class BrokerResource(dg.ConfigurableResource, ABC):
    """A broker account for the flows; `get()` returns a `core.ports.Broker`."""

    @abstractmethod
    def get(self) -> Broker: ...


class MarketDataResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def get(self) -> MarketData: ...


class LedgerResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def get(self) -> Ledger: ...


class PaperBrokerResource(BrokerResource):
    """Simulated cash account persisted in SQLite (survives processes and reruns)."""

    state_path: str
    starting_cash: float = 100_000.0
    commission_per_share: float = 0.0
    slippage_bps: float = 0.0

    def get(self) -> Broker:
        return PaperBroker(self.state_path, self.starting_cash, self.commission_per_share, self.slippage_bps)


class ReplayMarketDataResource(MarketDataResource):
    """Deterministic offline bars from the bundled real return tape."""

    allow_any_symbol: bool = False

    def get(self) -> MarketData:
        return ReplayMarketData(allow_any_symbol=self.allow_any_symbol)


class SqliteLedgerResource(LedgerResource):
    path: str

    def get(self) -> Ledger:
        return SqliteLedger(self.path)


class TradingSettings(dg.ConfigurableResource):
    """Safety switches read by every flow that places orders.

    - kill_switch: refuse every order (set TRADING_KILL_SWITCH=1).
    - max_tick_age_minutes: only place orders for a tick whose bar closed at most this
      long ago; older ticks (backfills, late reruns) compute signals but order nothing.
      None disables the check (the local default, so `make run` can replay yesterday).
    """

    kill_switch: bool = False
    max_tick_age_minutes: int | None = None

    def kill_switch_engaged(self) -> bool:
        """The configured switch, or TRADING_KILL_SWITCH read now (no redeploy needed)."""
        return self.kill_switch or env_flag("TRADING_KILL_SWITCH")


class EmaConcentrationSettings(dg.ConfigurableResource):
    """Parameters of the EMA concentration flow (seed 002)."""

    target: str = "TQQQ"
    fast: int = 10
    slow: int = 20
    buying_power_fraction: float = 0.95
    watchlist: list[str] = []  # noqa: RUF012 (pydantic copies field defaults)
    lookback_sessions: int = 8


def trading_env() -> str:
    env = os.environ.get("TRADING_ENV", "local").strip().lower()
    if env not in ENVIRONMENTS:
        raise ValueError(
            f"TRADING_ENV={env!r} is not available; choose one of {ENVIRONMENTS} "
            "(the AWS environment is planned: S3, DynamoDB, SQS, real brokers)")
    return env


def data_dir() -> Path:
    return Path(os.environ.get("TRADING_DATA_DIR", Path.cwd() / ".trading_data")).resolve()


def local_resources(base: Path | None = None, **overrides: object) -> dict[str, object]:
    """The embedded world under `base` (default TRADING_DATA_DIR).

    The broker is the paper broker unless `TRADING_BROKER_EMA_CONCENTRATION` names a real
    one (then its credentials come from the environment; see broker_resources.py).
    """
    # Imported here: broker_resources builds on the base classes defined above.
    from trading_assets.defs.broker_resources import broker_resource_for_flow

    base = Path(base) if base is not None else data_dir()
    resources: dict[str, object] = {
        "market_data": ReplayMarketDataResource(),
        "broker": broker_resource_for_flow("ema_concentration", "local", base=base),
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
    return dg.Definitions(resources=resources_for(trading_env()))
