"""Which resources the flows run with, chosen by one switch: TRADING_ENV (default `local`).

`local` is the embedded world: replay market data, the paper broker, a SQLite ledger,
Parquet files and a SQLite alert queue, all under TRADING_DATA_DIR (default
`./.trading_data`); notifications are logged. It works offline with no credentials.

`aws` is production: frames in S3 (Parquet), the ledger and the ledger-shaped assets
(`transactions`, `equity`) in DynamoDB, alerts on SQS FIFO, notifications on SNS, the
brokers' keys in Secrets Manager (read at run time), names from `settings.aws()`.

Each flow has its own broker key (`<flow>_broker`): paper locally unless
`TRADING_BROKER_<FLOW>` names a real one; in aws the production table of
`settings.BROKER_FOR_FLOW`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import ValidationError

from trading_assets import settings
from trading_assets.defs.conventions import LEDGER_IO_MANAGER
from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
from trading_assets.defs.fib_retracement.settings import FibInstrument, FibRetracementSettings
from trading_assets.defs.trend_dmi.settings import TrendDmiSettings
from trading_assets.resources.brokers import broker_key, broker_resource_for_flow
from trading_assets.resources.io_managers import LocalParquetIOManager, S3ParquetIOManager
from trading_assets.resources.ledger import SqliteLedgerResource
from trading_assets.resources.market_data import fx_prices_resource, market_data_resource
from trading_assets.resources.messaging import (
    AwsSecretsResource,
    alert_queue_resource,
    notifier_resource,
)
from trading_assets.resources.model_registry import ModelRegistryResource
from trading_assets.resources.stream import StreamStoreResource
from trading_assets.resources.symbol_state import symbol_state_resource
from trading_assets.resources.trading import TradingSettings

FIB_PRICES = "fib_retracement_prices"  # hourly IG epic prices (replay FX week locally)


def _flow_settings() -> dict[str, object]:
    instruments = settings.trend_dmi_instruments()
    trend_dmi = TrendDmiSettings(instruments=instruments) if instruments else TrendDmiSettings()
    markets = settings.fib_instruments()
    try:
        fib = (FibRetracementSettings(instruments=[FibInstrument(epic=e, size=n) for e, n in markets]) if markets
               else FibRetracementSettings())
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"{settings.FIB_INSTRUMENTS_ENV}: {reason}") from None
    return {"trading_settings": TradingSettings(), "ema_concentration": EmaConcentrationSettings(),
            "trend_dmi": trend_dmi, "fib_retracement": fib}


def local_resources(base: Path | None = None, **overrides: object) -> dict[str, object]:
    """The embedded world under `base` (default TRADING_DATA_DIR)."""
    base = Path(base) if base is not None else settings.data_dir()
    frames = LocalParquetIOManager(base_dir=str(base / "assets"))
    resources: dict[str, object] = {
        "market_data": market_data_resource(settings.market_data_source("local")),
        FIB_PRICES: fx_prices_resource("local"),
        **{broker_key(flow): broker_resource_for_flow(flow, "local", base=base) for flow in settings.FLOWS},
        "ledger": SqliteLedgerResource(path=str(base / "ledger.sqlite")),
        "io_manager": frames,
        LEDGER_IO_MANAGER: frames,
        "alert_queue": alert_queue_resource("local", base=base),
        "symbol_state": symbol_state_resource("local", base=base),
        "notifier": notifier_resource("local"),
        "stream_store": StreamStoreResource(root=str(base / "stream")),
        "model_registry": ModelRegistryResource.from_settings(),
        **_flow_settings(),
    }
    resources.update(overrides)
    return resources


def aws_resources(**overrides: object) -> dict[str, object]:
    """The AWS world named by `settings.aws()` (a missing name is a clear error)."""
    from trading_assets.resources.dynamodb_io_manager import DynamoDbLedgerIOManager
    from trading_assets.resources.ledger import DynamoDbLedgerResource

    aws = settings.aws()
    secrets = AwsSecretsResource(region=aws.region, secret_id=aws.secret_id)
    base = settings.data_dir()  # the paper broker's state, when a flow is sent back to paper
    resources: dict[str, object] = {
        "market_data": market_data_resource(settings.market_data_source("aws"), secrets=secrets),
        FIB_PRICES: fx_prices_resource("aws", secrets=secrets),
        **{broker_key(flow): broker_resource_for_flow(flow, "aws", base=base, secrets=secrets)
           for flow in settings.FLOWS},
        "ledger": DynamoDbLedgerResource(region=aws.region, transactions_table=aws.transactions_table,
                                         equity_table=aws.equity_table, orders_table=aws.orders_table),
        "io_manager": S3ParquetIOManager(bucket=aws.bucket, prefix=aws.s3_prefix, region=aws.region),
        LEDGER_IO_MANAGER: DynamoDbLedgerIOManager(region=aws.region, transactions_table=aws.transactions_table,
                                                   equity_table=aws.equity_table),
        "alert_queue": alert_queue_resource("aws"),
        "symbol_state": symbol_state_resource("aws"),
        # without a topic (a first bootstrap), notifications are logged rather than lost in an error
        "notifier": notifier_resource("aws"),
        "secrets": secrets,
        "stream_store": StreamStoreResource(root=str(base / "stream")),  # the consumer's files on this host
        "model_registry": ModelRegistryResource.from_settings(),
        **_flow_settings(),
    }
    resources.update(overrides)
    return resources


def resources_for(env: str) -> dict[str, object]:
    if env == "local":
        return local_resources()
    if env == "aws":
        return aws_resources()
    raise ValueError(f"no resources for TRADING_ENV={env!r}")


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(resources=resources_for(settings.trading_env()))
