"""Market-data resources: the offline replay (default) and the real vendors."""

from __future__ import annotations

from typing import ClassVar

from trading_assets import settings
from trading_assets.core.ports import MarketData
from trading_assets.resources.base import Credentials, HidesSecrets, MarketDataResource, credentials
from trading_assets.resources.brokers import IGLogin
from trading_assets.resources.messaging import AwsSecretsResource


class ReplayMarketDataResource(MarketDataResource):
    """Deterministic offline bars from the bundled real return tape: NYSE sessions, or
    (`session="fx"`) hourly bars of IG epics through the FX week."""

    allow_any_symbol: bool = False
    session: str = "nyse"

    def get(self) -> MarketData:
        from trading_assets.adapters.replay.market_data import ReplayMarketData

        return ReplayMarketData(allow_any_symbol=self.allow_any_symbol, session=self.session)


class TwelveDataResource(Credentials, MarketDataResource):
    """Twelve Data bars; `credits_per_minute` paces calls (free tier: 8/min)."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key",)
    SECRET_KEYS: ClassVar[dict[str, str]] = {"api_key": "TWELVE_DATA_API_KEY"}

    api_key: str | None = None
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


class AlpacaBarsResource(Credentials, MarketDataResource):
    """Alpaca stock bars (IEX feed by default: free plans may not query SIP)."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ("api_key", "secret_key")
    SECRET_KEYS: ClassVar[dict[str, str]] = {"api_key": "ALPACA_API_KEY", "secret_key": "ALPACA_SECRET_KEY"}

    api_key: str | None = None
    secret_key: str | None = None
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


class IGPricesResource(IGLogin, MarketDataResource):
    """IG historical prices (symbols are epics); same login as the IG broker."""

    timeout: float = 10.0

    def get(self) -> MarketData:
        if (resolved := self._outside_run_copy()) is not None:
            return resolved.get()
        from trading_assets.adapters.ig.broker import shared_connection
        from trading_assets.adapters.ig.prices import IGPrices

        # The IG broker's session (one login per process and login, see shared_connection).
        conn = shared_connection(self.username, self.password, self.api_key, self.acc_type,
                                 self.acc_number, self.base_url, self.timeout)
        return IGPrices(self.username, self.password, self.api_key, acc_type=self.acc_type,
                        acc_number=self.acc_number, base_url=self.base_url,
                        timeout=self.timeout, connection=conn)


def market_data_resource(source: str, *, secrets: AwsSecretsResource | None = None) -> MarketDataResource:
    """The market-data resource for `source` (`settings.MARKET_DATA_SOURCES`): keys from
    the environment by `EnvVar`, or from `secrets` at run time; endpoints overridable by
    TWELVE_DATA_BASE_URL / ALPACA_DATA_URL."""
    if source == "replay":
        return ReplayMarketDataResource()
    if source == "yfinance":
        return YFinanceResource()
    if source == "twelve_data":
        return TwelveDataResource(**credentials(TwelveDataResource, secrets),
                                  base_url=settings.endpoint("TWELVE_DATA_BASE_URL"))
    if source == "alpaca":
        return AlpacaBarsResource(**credentials(AlpacaBarsResource, secrets),
                                  url_override=settings.endpoint("ALPACA_DATA_URL"))
    raise ValueError(f"unknown market data {source!r}; sources are {settings.MARKET_DATA_SOURCES}")


def fx_prices_resource(env: str, *, secrets: AwsSecretsResource | None = None) -> MarketDataResource:
    """Hourly prices of IG epics for the Fibonacci flow: the replay FX week locally, IG's
    price history in aws mode, and locally too when the flow trades at IG
    (`TRADING_BROKER_FIB_RETRACEMENT=ig`: a deal's levels must come from the market it is
    placed in). The IG login comes from the environment or `secrets` (IG_ACC_TYPE demo by
    default, IG_BASE_URL for a recording server); IG's bars go through the bar cache: S3
    under the asset prefix by default in aws mode, a SQLite file under TRADING_DATA_DIR
    locally or with TRADING_BAR_CACHE=sqlite, none with TRADING_BAR_CACHE=off."""
    if env not in ("local", "aws"):
        raise ValueError(f"no FX prices for TRADING_ENV={env!r}")
    if env == "local" and settings.broker_for_flow("fib_retracement", env) != "ig":
        return ReplayMarketDataResource(session="fx")
    prices = IGPricesResource(**credentials(IGPricesResource, secrets),
                              acc_type=settings.env_str("IG_ACC_TYPE", "demo"),
                              acc_number=settings.env_str("IG_ACC_NUMBER") or None,
                              base_url=settings.endpoint("IG_BASE_URL"))
    # IG allows ~10,000 historical points a week and the flow wants ~48 bars per market
    # every hour: through the bar cache a tick asks only for the bar that has just closed.
    cache = settings.bar_cache("s3" if env == "aws" else "sqlite")
    if cache == "s3":  # under the asset prefix, which the run tasks' role may read and write
        aws = settings.aws()
        return CachedMarketDataResource(inner=prices, store="s3", bucket=aws.bucket, region=aws.region,
                                        prefix=f"{aws.s3_prefix}/bar-cache")
    if cache == "sqlite":
        return CachedMarketDataResource(inner=prices, store="sqlite",
                                        path=str(settings.data_dir() / "bar_cache.sqlite"))
    return prices


class CachedMarketDataResource(MarketDataResource):
    """`inner`'s bars through the bar cache (adapters/bar_cache.py): only bars never fetched
    before are asked for, so the IG Fibonacci flow's hourly ticks stay inside IG's ~10,000
    historical points a week. `store`: "s3" (a Parquet object per market under
    s3://`bucket`/`prefix`/, for ECS tasks, which have no persistent disk) or "sqlite" (the
    file at `path`)."""

    inner: MarketDataResource
    store: str = "s3"
    bucket: str | None = None
    prefix: str = "bar-cache"
    region: str | None = None
    path: str | None = None

    def get(self) -> MarketData:
        from trading_assets.adapters.bar_cache import BarStore, CachedMarketData, S3BarStore, SqliteBarStore

        store: BarStore
        if self.store == "s3":
            if not (self.bucket and self.region):
                raise ValueError("CachedMarketDataResource(store='s3') needs bucket and region")
            store = S3BarStore(self.bucket, self.prefix, self.region)
        elif self.store == "sqlite":
            if not self.path:
                raise ValueError("CachedMarketDataResource(store='sqlite') needs path")
            store = SqliteBarStore(self.path)
        else:
            raise ValueError(f"CachedMarketDataResource: store {self.store!r} is not s3 or sqlite")
        return CachedMarketData(self.inner.get(), store)
