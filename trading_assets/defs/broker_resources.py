"""Dagster resources for the real brokers and market-data vendors, and which broker each
flow uses.

Secrets are fields a deployment fills with `dagster.EnvVar("...")`, so they are resolved
at run time, never written into run config, and shown in the UI by variable name only:

    AlpacaBrokerResource(api_key=dg.EnvVar("ALPACA_API_KEY"),
                         secret_key=dg.EnvVar("ALPACA_SECRET_KEY"))

Every broker resource's `get()` returns the adapter wrapped in `GuardedBroker`: the kill
switch (`kill_switch` field or `TRADING_KILL_SWITCH`, read at call time) refuses orders,
and a real-money account refuses orders unless `live_trading=True` is set explicitly.
Demo/paper accounts are the defaults everywhere.

`BROKER_FOR_FLOW` says which broker a flow trades through per `TRADING_ENV`: the paper
broker for every flow locally; in production EMA -> Alpaca, Fibonacci and KNN -> IG,
TradingView (trend_dmi) -> Tradovate. `TRADING_BROKER_<FLOW>` overrides one flow.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import dagster as dg

from trading_assets.adapters.safety import GuardedBroker, env_flag
from trading_assets.core.ports import Broker, MarketData
from trading_assets.defs.resources import (
    BrokerResource,
    MarketDataResource,
    PaperBrokerResource,
    data_dir,
)

FLOWS = ("ema_concentration", "fib_retracement", "trend_dmi", "ma_crossover", "knn_shadow")
BROKERS = ("paper", "alpaca", "ig", "tradovate")

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


def broker_for_flow(flow: str, env: str | None = None) -> str:
    """The broker name a flow trades through in `env` (default `TRADING_ENV`, else local).

    `TRADING_BROKER_<FLOW>` (e.g. `TRADING_BROKER_TREND_DMI=paper`) overrides the table,
    so one flow can be sent back to paper without touching the others.
    """
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; flows are {FLOWS}")
    env = (env or os.environ.get("TRADING_ENV") or "local").strip().lower()
    override = os.environ.get(f"TRADING_BROKER_{flow.upper()}", "").strip().lower()
    if override:
        if override not in BROKERS:
            raise ValueError(f"TRADING_BROKER_{flow.upper()}={override!r}: choose from {BROKERS}")
        return override
    return BROKER_FOR_FLOW.get(env, BROKER_FOR_FLOW["local"])[flow]


_UNRESOLVED = (dg.EnvVar, type(dg.EnvVar.int("_")))


class HidesSecrets:
    """Mask secret fields in `repr()`/`str()`: a resource is easy to log or put into
    metadata by accident (`context.log.info(f"{broker}")`), and pydantic's default repr
    prints every resolved field, EnvVar secrets included.

    Also resolves `EnvVar` fields when `get()` is called outside a run (a script, a
    sensor helper): there Dagster has not resolved them, and the field would hold the
    variable's *name*."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    def _outside_run_copy(self) -> Any:
        """A resolved copy if some field is still an unresolved EnvVar, else None."""
        if any(isinstance(v, _UNRESOLVED) for v in self.__dict__.values()):
            return self.process_config_and_initialize()  # type: ignore[attr-defined]
        return None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            yield name, ("***" if name in self.SECRET_FIELDS and value else value)


# ----------------------------------------------------------------------------- brokers


class _GuardedBrokerResource(HidesSecrets, BrokerResource):
    """Shared safety settings of the real-broker resources."""

    live_trading: bool = False  # the explicit switch for real-money accounts
    kill_switch: bool = False  # refuse every order (TRADING_KILL_SWITCH works too)
    timeout: float = 10.0

    def _guard(self, broker: Broker, live: bool) -> Broker:
        return GuardedBroker(broker, live=live, live_trading=self.live_trading,
                             kill_switch=self.kill_switch)


class GuardedPaperBrokerResource(PaperBrokerResource):
    """The paper broker behind the same kill switch as the real ones (paper is never
    real money, so the live gate does not apply)."""

    kill_switch: bool = False

    def get(self) -> Broker:
        return GuardedBroker(super().get(), live=False, kill_switch=self.kill_switch)


class AlpacaBrokerResource(_GuardedBrokerResource):
    """Alpaca (US equities) through alpaca-py; paper account unless `paper=False`."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key", "secret_key")

    api_key: str
    secret_key: str
    paper: bool = True
    url_override: str | None = None
    rate_limit_per_minute: int = 200  # Alpaca's published limit

    def get(self) -> Broker:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.alpaca.broker import AlpacaBroker

        broker = AlpacaBroker(self.api_key, self.secret_key, paper=self.paper,
                              url_override=self.url_override, timeout=self.timeout,
                              rate_limit_per_minute=self.rate_limit_per_minute)
        return self._guard(broker, live=not self.paper)


class IGBrokerResource(_GuardedBrokerResource):
    """IG (spread bets / CFDs) through trading-ig; demo account unless `acc_type="live"`."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password", "api_key")

    username: str
    password: str
    api_key: str
    acc_type: str = "demo"
    acc_number: str | None = None
    base_url: str | None = None

    def get(self) -> Broker:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.ig.broker import IGBroker

        broker = IGBroker(self.username, self.password, self.api_key, acc_type=self.acc_type,
                          acc_number=self.acc_number, base_url=self.base_url,
                          timeout=self.timeout)
        return self._guard(broker, live=self.acc_type.lower() == "live")


class TradovateBrokerResource(_GuardedBrokerResource):
    """Tradovate (futures) over REST; demo environment unless `environment="live"`."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password", "sec")

    username: str
    password: str
    app_id: str
    app_version: str = "1.0"
    cid: int
    sec: str
    device_id: str | None = None
    environment: str = "demo"
    base_url: str | None = None
    account_spec: str | None = None

    def get(self) -> Broker:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.tradovate.broker import TradovateBroker

        broker = TradovateBroker(self.username, self.password, self.app_id, self.app_version,
                                 self.cid, self.sec, device_id=self.device_id,
                                 environment=self.environment, base_url=self.base_url,
                                 account_spec=self.account_spec, timeout=self.timeout)
        return self._guard(broker, live=self.environment == "live")


# ----------------------------------------------------------------------------- market data


class TwelveDataResource(HidesSecrets, MarketDataResource):
    """Twelve Data bars; `credits_per_minute` paces calls (free tier: 8/min)."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key",)

    api_key: str
    base_url: str | None = None
    credits_per_minute: int = 8
    timezone: str = "UTC"
    timeout: float = 10.0

    def get(self) -> MarketData:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.twelve_data.market_data import BASE_URL, TwelveData

        return TwelveData(self.api_key, base_url=self.base_url or BASE_URL,
                          timeout=self.timeout, credits_per_minute=self.credits_per_minute,
                          timezone=self.timezone)


class YFinanceResource(HidesSecrets, MarketDataResource):
    """Yahoo Finance bars through yfinance (no credentials)."""

    tz_cache_dir: str | None = None
    timeout: float = 10.0
    auto_adjust: bool = True

    def get(self) -> MarketData:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.yfinance.market_data import YFinanceProvider

        return YFinanceProvider(tz_cache_dir=self.tz_cache_dir, timeout=self.timeout,
                                auto_adjust=self.auto_adjust)


class AlpacaBarsResource(HidesSecrets, MarketDataResource):
    """Alpaca stock bars (IEX feed by default: free plans may not query SIP)."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key", "secret_key")

    api_key: str
    secret_key: str
    url_override: str | None = None
    feed: str = "iex"
    timeout: float = 10.0
    rate_limit_per_minute: int = 200

    def get(self) -> MarketData:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.alpaca.bars import AlpacaBars

        return AlpacaBars(self.api_key, self.secret_key, url_override=self.url_override,
                          feed=self.feed, timeout=self.timeout,
                          rate_limit_per_minute=self.rate_limit_per_minute)


class IGPricesResource(HidesSecrets, MarketDataResource):
    """IG historical prices (symbols are epics); same login as the IG broker."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password", "api_key")

    username: str
    password: str
    api_key: str
    acc_type: str = "demo"
    acc_number: str | None = None
    base_url: str | None = None
    timeout: float = 10.0

    def get(self) -> MarketData:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.ig.prices import IGPrices

        return IGPrices(self.username, self.password, self.api_key, acc_type=self.acc_type,
                        acc_number=self.acc_number, base_url=self.base_url,
                        timeout=self.timeout)


# ----------------------------------------------------------------------------- wiring


def _endpoint(variable: str) -> str | None:
    """A venue endpoint from the environment (None: the client's default host).

    Checked here so a typo is a clear error before any call, not a connection failure."""
    value = os.environ.get(variable, "").strip().rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{variable}={value!r} is not an http(s) URL, e.g. http://127.0.0.1:8080")
    return value


def broker_resource(name: str, *, flow: str = "default", base: Path | None = None
                    ) -> BrokerResource:
    """The resource for broker `name`, secrets from the environment by `EnvVar`.

    Non-secret settings come from plain environment variables with safe defaults
    (paper/demo accounts, live trading off):
    `ALPACA_PAPER` (true), `IG_ACC_TYPE` (demo), `TRADOVATE_ENVIRONMENT` (demo),
    `TRADING_LIVE_TRADING` (false). Each venue's endpoint can be pointed at a proxy, a
    recording server or a sandbox: `ALPACA_BASE_URL`, `IG_BASE_URL`, `TRADOVATE_BASE_URL`
    (unset: the venue's own paper/demo or live host).
    """
    live_trading = env_flag("TRADING_LIVE_TRADING")
    if name == "paper":
        base = Path(base) if base is not None else data_dir()
        return GuardedPaperBrokerResource(state_path=str(base / f"paper_{flow}.sqlite"))
    if name == "alpaca":
        return AlpacaBrokerResource(
            api_key=dg.EnvVar("ALPACA_API_KEY"), secret_key=dg.EnvVar("ALPACA_SECRET_KEY"),
            paper=os.environ.get("ALPACA_PAPER", "true").strip().lower() != "false",
            url_override=_endpoint("ALPACA_BASE_URL"), live_trading=live_trading)
    if name == "ig":
        return IGBrokerResource(
            username=dg.EnvVar("IG_USERNAME"), password=dg.EnvVar("IG_PASSWORD"),
            api_key=dg.EnvVar("IG_API_KEY"), acc_type=os.environ.get("IG_ACC_TYPE", "demo"),
            acc_number=os.environ.get("IG_ACC_NUMBER") or None, base_url=_endpoint("IG_BASE_URL"),
            live_trading=live_trading)
    if name == "tradovate":
        return TradovateBrokerResource(
            username=dg.EnvVar("TRADOVATE_USERNAME"), password=dg.EnvVar("TRADOVATE_PASSWORD"),
            app_id=dg.EnvVar("TRADOVATE_APP_ID"), cid=dg.EnvVar.int("TRADOVATE_CID"),
            sec=dg.EnvVar("TRADOVATE_SEC"),
            app_version=os.environ.get("TRADOVATE_APP_VERSION", "1.0"),
            device_id=os.environ.get("TRADOVATE_DEVICE_ID") or None,
            environment=os.environ.get("TRADOVATE_ENVIRONMENT", "demo"),
            account_spec=os.environ.get("TRADOVATE_ACCOUNT_SPEC") or None,
            base_url=_endpoint("TRADOVATE_BASE_URL"), live_trading=live_trading)
    raise ValueError(f"unknown broker {name!r}; brokers are {BROKERS}")


def broker_resource_for_flow(flow: str, env: str | None = None, *, base: Path | None = None
                             ) -> BrokerResource:
    """The configured broker resource for `flow` (paper unless production says otherwise)."""
    return broker_resource(broker_for_flow(flow, env), flow=flow, base=base)
