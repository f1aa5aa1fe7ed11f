"""Broker resources: the paper broker and the real brokers (Alpaca, IG, Tradovate), and
which one each flow uses.

Secrets are fields a deployment fills with `dagster.EnvVar("...")`, so they are resolved
at run time, never written into run config, and shown in the UI by variable name only:

    AlpacaBrokerResource(api_key=dg.EnvVar("ALPACA_API_KEY"),
                         secret_key=dg.EnvVar("ALPACA_SECRET_KEY"))

Every broker resource's `get()` returns the adapter wrapped in `GuardedBroker`: the one
kill switch (`settings.kill_switch_engaged`, read at call time) refuses orders, and a
real-money account refuses orders unless `live_trading=True` is set explicitly.
Demo/paper accounts are the defaults everywhere. Which broker a flow trades through is
`settings.broker_for_flow`; each flow has its own resource key (`<flow>_broker`), so two
flows can trade two brokers at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from trading_assets import settings
from trading_assets.adapters.safety import GuardedBroker
from trading_assets.core.ports import Broker
from trading_assets.resources.base import BrokerResource, Credentials, credentials
from trading_assets.resources.messaging import AwsSecretsResource


def broker_key(flow: str) -> str:
    """The resource key of a flow's broker (assets take it as a parameter of that name)."""
    return f"{flow}_broker"


# ----------------------------------------------------------------------------- brokers


class PaperBrokerResource(BrokerResource):
    """Simulated cash account persisted in SQLite (survives processes and reruns), behind
    the same kill switch as the real brokers (paper is never real money: no live gate)."""

    state_path: str
    starting_cash: float = 100_000.0
    commission_per_share: float = 0.0
    slippage_bps: float = 0.0
    allow_short: bool = False  # the futures/CFD flows go short; the equity flows never do

    def get(self) -> Broker:
        from trading_assets.adapters.paper.broker import PaperBroker

        paper = PaperBroker(self.state_path, self.starting_cash, self.commission_per_share, self.slippage_bps,
                            allow_short=self.allow_short)
        return GuardedBroker(paper, live=False, kill_switch=settings.kill_switch_engaged)


class _GuardedBrokerResource(Credentials, BrokerResource):
    """Shared safety settings of the real-broker resources."""

    live_trading: bool = False  # the explicit switch for real-money accounts
    timeout: float = 10.0

    def _guard(self, broker: Broker, live: bool) -> Broker:
        return GuardedBroker(broker, live=live, live_trading=self.live_trading,
                             kill_switch=settings.kill_switch_engaged)


class AlpacaBrokerResource(_GuardedBrokerResource):
    """Alpaca (US equities) through alpaca-py; paper account unless `paper=False`."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key", "secret_key")
    SECRET_KEYS: ClassVar[dict[str, str]] = {"api_key": "ALPACA_API_KEY", "secret_key": "ALPACA_SECRET_KEY"}

    api_key: str | None = None
    secret_key: str | None = None
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


class IGLogin(Credentials):
    """An IG login, shared by the IG broker and IG prices resources."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password", "api_key")
    SECRET_KEYS: ClassVar[dict[str, str]] = {"username": "IG_USERNAME", "password": "IG_PASSWORD",
                                              "api_key": "IG_API_KEY"}

    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    acc_type: str = "demo"
    acc_number: str | None = None
    base_url: str | None = None


class IGBrokerResource(IGLogin, _GuardedBrokerResource):
    """IG (spread bets / CFDs) through trading-ig; demo account unless `acc_type="live"`."""

    def get(self) -> Broker:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.ig.broker import IGBroker, shared_connection

        # One IG session per login and process, shared with IGPricesResource (each step
        # building its own broker used to log in again).
        conn = shared_connection(self.username, self.password, self.api_key, self.acc_type,
                                 self.acc_number, self.base_url, self.timeout)
        broker = IGBroker(self.username, self.password, self.api_key, acc_type=self.acc_type,
                          acc_number=self.acc_number, base_url=self.base_url,
                          timeout=self.timeout, connection=conn)
        return self._guard(broker, live=self.acc_type.lower() == "live")


class TradovateBrokerResource(_GuardedBrokerResource):
    """Tradovate (futures) over REST; demo environment unless `environment="live"`."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("password", "sec")
    SECRET_KEYS: ClassVar[dict[str, str]] = {"username": "TRADOVATE_USERNAME", "password": "TRADOVATE_PASSWORD",
                                              "app_id": "TRADOVATE_APP_ID", "cid": "TRADOVATE_CID",
                                              "sec": "TRADOVATE_SEC"}

    username: str | None = None
    password: str | None = None
    app_id: str | None = None
    app_version: str = "1.0"
    cid: int | None = None
    sec: str | None = None
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


# ----------------------------------------------------------------------------- wiring


def broker_resource(name: str, *, flow: str = "default", base: Path | None = None,
                    secrets: AwsSecretsResource | None = None) -> BrokerResource:
    """The resource for broker `name`: credentials from the environment by `EnvVar`, or,
    given `secrets`, from that Secrets Manager secret (same key names) at run time.

    Non-secret settings come from plain environment variables with safe defaults
    (paper/demo accounts, live trading off):
    `ALPACA_PAPER` (true), `IG_ACC_TYPE` (demo), `TRADOVATE_ENVIRONMENT` (demo),
    `TRADING_LIVE_TRADING` (false). Each venue's endpoint can be pointed at a proxy, a
    recording server or a sandbox: `ALPACA_BASE_URL`, `IG_BASE_URL`, `TRADOVATE_BASE_URL`
    (unset: the venue's own paper/demo or live host).
    """
    live_trading = settings.live_trading_enabled()
    if name == "paper":
        base = Path(base) if base is not None else settings.data_dir()
        return PaperBrokerResource(state_path=str(base / f"paper_{flow}.sqlite"),
                                   allow_short=flow in settings.SHORTING_FLOWS)
    if name == "alpaca":
        return AlpacaBrokerResource(
            **credentials(AlpacaBrokerResource, secrets),
            paper=settings.env_str("ALPACA_PAPER", "true").lower() != "false",
            url_override=settings.endpoint("ALPACA_BASE_URL"), live_trading=live_trading)
    if name == "ig":
        return IGBrokerResource(
            **credentials(IGBrokerResource, secrets), acc_type=settings.env_str("IG_ACC_TYPE", "demo"),
            acc_number=settings.env_str("IG_ACC_NUMBER") or None, base_url=settings.endpoint("IG_BASE_URL"),
            live_trading=live_trading)
    if name == "tradovate":
        return TradovateBrokerResource(
            **credentials(TradovateBrokerResource, secrets),
            app_version=settings.env_str("TRADOVATE_APP_VERSION", "1.0"),
            device_id=settings.env_str("TRADOVATE_DEVICE_ID") or None,
            environment=settings.env_str("TRADOVATE_ENVIRONMENT", "demo"),
            account_spec=settings.env_str("TRADOVATE_ACCOUNT_SPEC") or None,
            base_url=settings.endpoint("TRADOVATE_BASE_URL"), live_trading=live_trading)
    raise ValueError(f"unknown broker {name!r}; brokers are {settings.BROKERS}")


def broker_resource_for_flow(flow: str, env: str | None = None, *, base: Path | None = None,
                             secrets: AwsSecretsResource | None = None) -> BrokerResource:
    """The configured broker resource for `flow` (paper unless production says otherwise)."""
    return broker_resource(settings.broker_for_flow(flow, env), flow=flow, base=base, secrets=secrets)
