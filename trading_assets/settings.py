"""Every setting read from the environment, in one place (no other module reads it).

Values are read when asked for, not at import, so flipping a variable (the kill switch
above all) takes effect on the next call without a redeploy. Secrets are not read here:
resources name them with `dagster.EnvVar("...")`, so Dagster resolves them at run time
and shows only the variable's name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENTS = ("local", "aws")
FLOWS = ("ema_concentration", "fib_retracement", "trend_dmi", "ma_crossover", "knn_shadow")
BROKERS = ("paper", "alpaca", "ig", "tradovate")
# Flows that go short (futures, CFDs): their paper account allows it; the others are cash accounts.
SHORTING_FLOWS = ("fib_retracement", "trend_dmi", "knn_shadow")
KILL_SWITCH_ENV = "TRADING_KILL_SWITCH"
_TRUTHY = {"1", "true", "yes", "on"}

# Which broker each flow trades through, per TRADING_ENV: paper everywhere locally; in
# production EMA -> Alpaca, Fibonacci and KNN -> IG, TradingView alerts -> Tradovate.
BROKER_FOR_FLOW: dict[str, dict[str, str]] = {
    "local": dict.fromkeys(FLOWS, "paper"),
    "aws": {
        "ema_concentration": "alpaca",
        "fib_retracement": "ig",
        "trend_dmi": "tradovate",
        "ma_crossover": "paper",
        "knn_shadow": "ig",
    },
}


def env_str(name: str, default: str = "") -> str:
    """A plain (non-secret) setting, stripped; `default` when unset or blank."""
    return os.environ.get(name, "").strip() or default


def env_flag(name: str) -> bool:
    """True if the variable is set to 1/true/yes/on (any case), read now."""
    return env_str(name).lower() in _TRUTHY


def trading_env() -> str:
    """`TRADING_ENV` (default `local`); an unknown value is a clear error."""
    env = env_str("TRADING_ENV", "local").lower()
    if env not in ENVIRONMENTS:
        raise ValueError(
            f"TRADING_ENV={env!r} is not available; choose one of {ENVIRONMENTS}")
    return env


def data_dir() -> Path:
    """`TRADING_DATA_DIR` (default `./.trading_data`): ledger, paper accounts, asset files."""
    return Path(env_str("TRADING_DATA_DIR") or Path.cwd() / ".trading_data").resolve()


def dagster_home() -> str | None:
    """`DAGSTER_HOME`, or None (then an ephemeral instance is used)."""
    return env_str("DAGSTER_HOME") or None


def kill_switch_engaged() -> bool:
    """The one kill switch: `TRADING_KILL_SWITCH=1` refuses every order, read at call time
    by the tick engine (nothing is planned) and by every guarded broker (nothing is sent)."""
    return env_flag(KILL_SWITCH_ENV)


def live_trading_enabled() -> bool:
    """`TRADING_LIVE_TRADING`: required, in addition, for any real-money account."""
    return env_flag("TRADING_LIVE_TRADING")


def worker_captures_logs() -> bool:
    """`TRADING_WORKER_CAPTURE_LOGS=1`: the alert worker's runs capture stdout/stderr into
    the instance's compute logs as other runs do (off: ~20% less CPU a run; the runs'
    structured event logs are kept either way, and the worker's own output is its log)."""
    return env_flag("TRADING_WORKER_CAPTURE_LOGS")


TREND_DMI_INSTRUMENTS_ENV = "TRADING_TREND_DMI_INSTRUMENTS"


def trend_dmi_instruments() -> dict[str, str] | None:
    """`TRADING_TREND_DMI_INSTRUMENTS="MNQ1!=MNQ@front,ES1!=ES@front,AAPL=AAPL"`: which
    TradingView tickers the alert flow trades, as which broker instrument (`ROOT@front`:
    the CME front month). Unset: the flow's default (`MNQ1!` only). The worker, the
    sensor's runs and the UI all read it, so one setting changes every path."""
    text = env_str(TREND_DMI_INSTRUMENTS_ENV).strip()
    if not text:
        return None
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        ticker, sep, instrument = (x.strip() for x in item.partition("="))
        if not sep or not ticker or not instrument:
            raise ValueError(f"{TREND_DMI_INSTRUMENTS_ENV}: {item!r} is not TICKER=INSTRUMENT "
                             "(e.g. MNQ1!=MNQ@front,ES1!=ES@front)")
        mapping[ticker] = instrument
    return mapping


FIB_INSTRUMENTS_ENV = "TRADING_FIB_INSTRUMENTS"


def fib_instruments() -> list[tuple[str, float]] | None:
    """`TRADING_FIB_INSTRUMENTS="CS.D.EURUSD.MINI.IP=1,CS.D.GBPUSD.MINI.IP=2"`: which IG
    markets the Fibonacci flow trades, each at what deal size (`=SIZE` optional, 1). Unset:
    the flow's default (EUR/USD). The schedule's runs, the CLI and the UI all read it; the
    flow's settings check each epic and size."""
    text = env_str(FIB_INSTRUMENTS_ENV).strip()
    if not text:
        return None
    out: list[tuple[str, float]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        epic, sep, size = (x.strip() for x in item.partition("="))
        try:
            out.append((epic, float(size) if sep else 1.0))
        except ValueError:
            raise ValueError(f"{FIB_INSTRUMENTS_ENV}: {item!r} is not EPIC or EPIC=SIZE "
                             "(e.g. CS.D.EURUSD.MINI.IP=1,CS.D.GBPUSD.MINI.IP=2)") from None
    return out


KNN_EPICS_ENV = "TRADING_KNN_EPICS"
DEFAULT_KNN_EPICS = ("CS.D.EURUSD.MINI.IP",)
STREAM_SOURCES = ("replay", "ig")


def knn_epics() -> list[str]:
    """`TRADING_KNN_EPICS="CS.D.EURUSD.MINI.IP,CS.D.GBPUSD.MINI.IP"`: the IG markets the
    price stream (`python -m trading_assets stream`) subscribes to for the knn_shadow flow.
    Unset or empty: EUR/USD. A name that is not an epic (A.B.C...) is one clear error."""
    text = env_str(KNN_EPICS_ENV).strip()
    epics = list(dict.fromkeys(filter(None, (part.strip() for part in text.split(","))))) if text else []
    bad = [e for e in epics if e.count(".") < 2 or " " in e]
    if bad:
        raise ValueError(f"{KNN_EPICS_ENV}: {bad} are not IG epics (e.g. CS.D.EURUSD.MINI.IP,CS.D.GBPUSD.MINI.IP)")
    return epics or list(DEFAULT_KNN_EPICS)


def stream_source(env: str | None = None) -> str:
    """Where the price stream's ticks come from: `TRADING_STREAM` (replay | ig); unset, IG
    in `TRADING_ENV=aws`, the replay stream otherwise."""
    source = env_str("TRADING_STREAM").strip().lower()
    if source:
        if source not in STREAM_SOURCES:
            raise ValueError(f"TRADING_STREAM={source!r}: choose from {STREAM_SOURCES}")
        return source
    env = (env or env_str("TRADING_ENV", "local")).lower()
    return "ig" if env == "aws" else "replay"


def broker_for_flow(flow: str, env: str | None = None) -> str:
    """The broker a flow trades through in `env` (default `TRADING_ENV`).

    `TRADING_BROKER_<FLOW>` (e.g. `TRADING_BROKER_TREND_DMI=paper`) overrides the table,
    so one flow can be sent back to paper without touching the others.
    """
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; flows are {FLOWS}")
    env = (env or env_str("TRADING_ENV", "local")).lower()
    override = env_str(f"TRADING_BROKER_{flow.upper()}").lower()
    if override:
        if override not in BROKERS:
            raise ValueError(f"TRADING_BROKER_{flow.upper()}={override!r}: choose from {BROKERS}")
        return override
    return BROKER_FOR_FLOW.get(env, BROKER_FOR_FLOW["local"])[flow]


MARKET_DATA_SOURCES = ("replay", "twelve_data", "yfinance", "alpaca")
# Bundled replay data offline; in production the EMA flow's source, Twelve Data.
_DEFAULT_MARKET_DATA = {"local": "replay", "aws": "twelve_data"}


def market_data_source(env: str | None = None) -> str:
    """`TRADING_MARKET_DATA` (replay, twelve_data, yfinance, alpaca); default by environment."""
    env = (env or env_str("TRADING_ENV", "local")).lower()
    source = env_str("TRADING_MARKET_DATA", _DEFAULT_MARKET_DATA.get(env, "replay")).lower()
    if source not in MARKET_DATA_SOURCES:
        raise ValueError(f"TRADING_MARKET_DATA={source!r}: choose from {MARKET_DATA_SOURCES}")
    return source


BAR_CACHES = ("s3", "sqlite", "off")
BAR_CACHE_ENV = "TRADING_BAR_CACHE"


def bar_cache(default: str = "s3") -> str:
    """`TRADING_BAR_CACHE` (s3, sqlite, off; `default`: s3 in aws mode, sqlite locally):
    where the IG Fibonacci flow keeps the IG hourly bars it has already fetched, so each
    tick asks IG only for the new ones (IG allows ~10,000 historical points a week). s3:
    the stack's bucket (ECS tasks have no persistent disk); sqlite: a file under
    TRADING_DATA_DIR, for a machine with a persistent disk; off: every tick fetches every
    bar. Optional, so not one of the AWS_VARIABLES the stack must set. Local replay bars
    are never cached."""
    choice = env_str(BAR_CACHE_ENV, default).lower()
    if choice not in BAR_CACHES:
        raise ValueError(f"{BAR_CACHE_ENV}={choice!r}: choose from {BAR_CACHES}")
    return choice


MLFLOW_ARTIFACTS_ENV = "TRADING_MLFLOW_ARTIFACTS"


def mlflow_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` (MLflow's own variable; default `sqlite:///<data dir>/mlflow.sqlite`):
    where the knn_shadow flow's MLflow runs and model registry live (tracking and registry
    share it). Artifacts: `mlflow_artifact_root`."""
    return env_str("MLFLOW_TRACKING_URI") or f"sqlite:///{data_dir() / 'mlflow.sqlite'}"


def mlflow_artifact_root() -> str:
    """`TRADING_MLFLOW_ARTIFACTS` (an `s3://bucket/prefix`, a `file://` URI or a local path;
    default `<data dir>/mlruns`): where new MLflow experiments keep their model artifacts."""
    value = env_str(MLFLOW_ARTIFACTS_ENV).rstrip("/")
    if not value:
        return (data_dir() / "mlruns").as_uri()
    if value.startswith(("s3://", "file://")):
        return value
    if "://" in value:
        raise ValueError(f"{MLFLOW_ARTIFACTS_ENV}={value!r}: use s3://bucket/prefix, file:///path or a path")
    return Path(value).resolve().as_uri()


def apply_environment(values: dict[str, str]) -> None:
    """Set variables for this process and the code it runs (`make run-aws` points the AWS
    world at its moto server this way); only settings touches the environment."""
    os.environ.update(values)


def endpoint(variable: str) -> str | None:
    """A venue endpoint (`ALPACA_BASE_URL`, ...), None for the client's default host.

    Checked here so a typo is a clear error before any call, not a connection failure."""
    value = env_str(variable).rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{variable}={value!r} is not an http(s) URL, e.g. http://127.0.0.1:8080")
    return value


# ----------------------------------------------------------------------------- webhook gateway

#: The TradingView webhook's shared secret: this variable locally, the key of the same name
#: in the Secrets Manager secret (`aws().secret_id`) in aws mode.
TRADINGVIEW_PASSPHRASE = "TRADINGVIEW_PASSPHRASE"
#: What the local gateway and `python -m trading_assets alert` use when TRADINGVIEW_PASSPHRASE
#: is unset, so `make dev` then `alert` work out of the box. The gateway refuses it on any
#: address other than loopback.
LOCAL_TRADINGVIEW_PASSPHRASE = "local-dev-passphrase"


def tradingview_passphrase() -> str:
    """The local webhook passphrase, read now: `TRADINGVIEW_PASSPHRASE`, or the development
    default above when unset (aws mode reads Secrets Manager instead, not this). The one
    secret read here: the gateway is not a Dagster process, so there is no EnvVar for it."""
    return env_str(TRADINGVIEW_PASSPHRASE, LOCAL_TRADINGVIEW_PASSPHRASE)


# ----------------------------------------------------------------------------- AWS world

#: Every variable the code reads in `TRADING_ENV=aws` (the CDK stack sets each on the
#: services that run the code; a test checks it). AWS_ENDPOINT_URL is boto3's own.
AWS_VARIABLES = (
    "TRADING_ENV", "AWS_REGION", "TRADING_S3_BUCKET", "TRADING_S3_PREFIX", "TRADING_DDB_TABLE_PREFIX",
    "TRADING_ALERT_QUEUE", "TRADING_SNS_TOPIC_ARN", "TRADING_SECRET_ID", "TRADING_DATA_DIR",
    "TRADING_MARKET_DATA",
)


class MissingSetting(ValueError):
    """A required setting is unset; the message names it and how to provide it."""


@dataclass(frozen=True)
class AwsSettings:
    """Where the AWS world lives. Names, not secrets: credentials come from boto3's own
    chain (task role on ECS, env or profile elsewhere), secrets from Secrets Manager."""

    region: str
    bucket: str
    s3_prefix: str = "assets"
    table_prefix: str = "trading"
    alert_queue: str = "trading-alerts.fifo"
    topic_arn: str | None = None
    secret_id: str = "trading/brokers"

    @property
    def transactions_table(self) -> str:
        return f"{self.table_prefix}-transactions"

    @property
    def equity_table(self) -> str:
        return f"{self.table_prefix}-equity"

    @property
    def orders_table(self) -> str:
        """Plans, order intents and account baselines (one table, keyed by tick)."""
        return f"{self.table_prefix}-orders"

    @property
    def alert_dlq(self) -> str:
        return self.alert_queue.removesuffix(".fifo") + "-dlq.fifo"


def aws() -> AwsSettings:
    """The AWS world's names from the environment; a missing one is a clear error that
    says what to set (`python -m trading_assets aws-bootstrap` creates the resources)."""
    region = env_str("AWS_REGION") or env_str("AWS_DEFAULT_REGION")
    if not region:
        raise MissingSetting("AWS_REGION is not set: TRADING_ENV=aws needs the region of the stack "
                             "(e.g. AWS_REGION=us-east-1)")
    bucket = env_str("TRADING_S3_BUCKET")
    if not bucket:
        raise MissingSetting("TRADING_S3_BUCKET is not set: TRADING_ENV=aws stores asset frames in S3 "
                             "(the stack's bucket; `python -m trading_assets aws-bootstrap` creates one)")
    queue = env_str("TRADING_ALERT_QUEUE", "trading-alerts.fifo")
    if not queue.endswith(".fifo"):
        raise MissingSetting(f"TRADING_ALERT_QUEUE={queue!r}: the alert queue is FIFO, its name ends in .fifo")
    return AwsSettings(
        region=region, bucket=bucket, s3_prefix=env_str("TRADING_S3_PREFIX", "assets").strip("/"),
        table_prefix=env_str("TRADING_DDB_TABLE_PREFIX", "trading"), alert_queue=queue,
        topic_arn=env_str("TRADING_SNS_TOPIC_ARN") or None,
        secret_id=env_str("TRADING_SECRET_ID", "trading/brokers"),
    )
