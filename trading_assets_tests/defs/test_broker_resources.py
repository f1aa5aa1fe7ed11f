"""Broker and market-data resources: secrets come from `EnvVar` and never show up in logs,
events, metadata or errors; every broker is guarded; each flow's broker is configurable
with paper as the default.

(No `from __future__ import annotations`: Dagster reads the asset's annotations at
definition time.)
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from trading_assets.adapters.safety import GuardedBroker
from trading_assets.core.ports import (
    Broker,
    KillSwitchEngaged,
    LiveTradingNotEnabled,
    MarketData,
    OrderRequest,
    Side,
)
from trading_assets.resources.base import BrokerResource
from trading_assets.resources.brokers import (
    AlpacaBrokerResource,
    IGBrokerResource,
    PaperBrokerResource,
    TradovateBrokerResource,
    broker_resource,
    broker_resource_for_flow,
)
from trading_assets.resources.market_data import (
    AlpacaBarsResource,
    IGPricesResource,
    TwelveDataResource,
    YFinanceResource,
)
from trading_assets.settings import BROKER_FOR_FLOW, FLOWS, broker_for_flow


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch) -> None:
    for name in ("TRADING_ENV", "TRADING_KILL_SWITCH", "TRADING_LIVE_TRADING",
                 *(f"TRADING_BROKER_{f.upper()}" for f in FLOWS)):
        monkeypatch.delenv(name, raising=False)


# ----------------------------------------------------------------------------- routing


def test_every_flow_trades_on_paper_by_default() -> None:
    assert {broker_for_flow(f) for f in FLOWS} == {"paper"}
    for flow in FLOWS:
        assert isinstance(broker_resource_for_flow(flow), PaperBrokerResource)


def test_production_routes_each_flow_to_its_broker(monkeypatch) -> None:
    monkeypatch.setenv("TRADING_ENV", "aws")
    assert broker_for_flow("ema_concentration") == "alpaca"
    assert broker_for_flow("fib_retracement") == "ig"
    assert broker_for_flow("knn_shadow") == "ig"
    assert broker_for_flow("trend_dmi") == "tradovate"
    assert isinstance(broker_resource_for_flow("trend_dmi"), TradovateBrokerResource)
    assert isinstance(broker_resource_for_flow("ema_concentration"), AlpacaBrokerResource)
    assert isinstance(broker_resource_for_flow("fib_retracement"), IGBrokerResource)
    assert BROKER_FOR_FLOW["aws"]["ma_crossover"] == "paper"


def test_one_flow_can_be_sent_back_to_paper_by_configuration(monkeypatch) -> None:
    monkeypatch.setenv("TRADING_BROKER_TREND_DMI", "paper")
    assert broker_for_flow("trend_dmi", "aws") == "paper"
    assert broker_for_flow("fib_retracement", "aws") == "ig"
    monkeypatch.setenv("TRADING_BROKER_TREND_DMI", "robinhood")
    with pytest.raises(ValueError):
        broker_for_flow("trend_dmi", "aws")
    with pytest.raises(ValueError):
        broker_for_flow("no_such_flow")


def test_paper_state_is_per_flow_under_the_data_dir(tmp_path) -> None:
    res = broker_resource_for_flow("trend_dmi", base=tmp_path)
    assert res.state_path == str(tmp_path / "paper_trend_dmi.sqlite")


def test_paper_broker_obeys_the_kill_switch_too(tmp_path, monkeypatch) -> None:
    broker = broker_resource_for_flow("ma_crossover", base=tmp_path).get()
    assert isinstance(broker, GuardedBroker) and broker.name == "paper"
    order = OrderRequest("p-1", "AAPL", Side.BUY, 1, reference_price=100.0)
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")
    with pytest.raises(KillSwitchEngaged):
        broker.submit_order(order)
    monkeypatch.delenv("TRADING_KILL_SWITCH")
    assert broker.submit_order(order).filled_qty == 1


def test_production_resources_take_secrets_from_env_vars_and_default_to_demo() -> None:
    tv = broker_resource("tradovate")
    assert tv.environment == "demo" and tv.live_trading is False
    ig = broker_resource("ig")
    assert ig.acc_type == "demo"
    alpaca = broker_resource("alpaca")
    assert alpaca.paper is True
    # the secret fields hold EnvVar references, not values
    for res, fields in ((tv, ("password", "sec")), (ig, ("password", "api_key")),
                        (alpaca, ("api_key", "secret_key"))):
        raw = res._convert_to_config_dictionary()
        for f in fields:
            assert raw[f] == {"env": raw[f]["env"]} and raw[f]["env"].isupper()


# ----------------------------------------------------------------------------- guarding


def test_every_broker_resource_returns_a_guarded_broker() -> None:
    resources: list[BrokerResource] = [
        AlpacaBrokerResource(api_key="k", secret_key="s", url_override="http://127.0.0.1:9"),
        IGBrokerResource(username="u", password="p", api_key="k", base_url="http://127.0.0.1:9"),
        TradovateBrokerResource(username="u", password="p", app_id="a", cid=1, sec="s",
                                base_url="http://127.0.0.1:9/v1"),
    ]
    names = []
    for res in resources:
        broker = res.get()
        assert isinstance(broker, GuardedBroker) and isinstance(broker, Broker)
        assert not broker.live
        names.append(broker.name)
    assert names == ["alpaca", "ig", "tradovate"]


@pytest.mark.parametrize("res", [
    AlpacaBrokerResource(api_key="k", secret_key="s", paper=False,
                         url_override="http://127.0.0.1:9"),
    IGBrokerResource(username="u", password="p", api_key="k", acc_type="live",
                     base_url="http://127.0.0.1:9"),
    TradovateBrokerResource(username="u", password="p", app_id="a", cid=1, sec="s",
                            environment="live", base_url="http://127.0.0.1:9/v1"),
], ids=["alpaca", "ig", "tradovate"])
def test_real_money_accounts_refuse_orders_without_live_trading(res: BrokerResource) -> None:
    broker = res.get()
    assert broker.live
    with pytest.raises(LiveTradingNotEnabled):
        broker.submit_order(OrderRequest("x-1", "SYM", Side.BUY, 1))
    assert res.model_copy(update={"live_trading": True}).get().live_trading


def test_the_one_kill_switch_refuses_orders_at_every_real_broker(monkeypatch) -> None:
    res = TradovateBrokerResource(username="u", password="p", app_id="a", cid=1, sec="s",
                                  base_url="http://127.0.0.1:9/v1")
    broker = res.get()  # built before the switch is flipped: read at call time
    monkeypatch.setenv("TRADING_KILL_SWITCH", "1")
    with pytest.raises(KillSwitchEngaged):
        broker.submit_order(OrderRequest("x-2", "MESZ6", Side.BUY, 1))
    with pytest.raises(KillSwitchEngaged):
        broker.close_position("MESZ6", "x-3")


def test_market_data_resources_build_their_providers(tmp_path) -> None:
    providers = [
        TwelveDataResource(api_key="k").get(),
        YFinanceResource(tz_cache_dir=str(tmp_path / "tz")).get(),
        AlpacaBarsResource(api_key="k", secret_key="s").get(),
        IGPricesResource(username="u", password="p", api_key="k").get(),
    ]
    assert all(isinstance(p, MarketData) for p in providers)
    assert [p.name for p in providers] == ["twelve_data", "yfinance", "alpaca", "ig"]


# ----------------------------------------------------------------------------- secrets


@dataclass
class Rig:
    resource: BrokerResource
    secrets: list[str]  # every secret value in play, right or wrong
    symbol: str
    price: float


@contextmanager
def _tradovate(monkeypatch, good: bool) -> Iterator[Rig]:
    from trading_assets_tests.fakes import tradovate as tvf

    fake = tvf.TradovateFake(clock=tvf.FakeClock(datetime.now(UTC)))
    with fake:
        password = tvf.FAKE_PASSWORD if good else "tv-wrong-pw-0a9f7e"
        monkeypatch.setenv("T_TV_USER", tvf.FAKE_USERNAME)
        monkeypatch.setenv("T_TV_PASSWORD", password)
        monkeypatch.setenv("T_TV_SEC", tvf.FAKE_SEC)
        monkeypatch.setenv("T_TV_CID", str(tvf.FAKE_CID))
        res = TradovateBrokerResource(
            username=dg.EnvVar("T_TV_USER"), password=dg.EnvVar("T_TV_PASSWORD"),
            app_id=tvf.FAKE_APP_ID, cid=dg.EnvVar.int("T_TV_CID"), sec=dg.EnvVar("T_TV_SEC"),
            base_url=f"{fake.url}/v1", timeout=2.0)
        yield Rig(res, [password, tvf.FAKE_SEC], "MESZ6", 5850.25)


@contextmanager
def _alpaca(monkeypatch, good: bool) -> Iterator[Rig]:
    from trading_assets_tests.fakes import alpaca as af

    fake = af.FakeAlpaca()
    fake.start()
    try:
        fake.set_price("AAPL", 190.0)
        secret = af.SECRET_KEY if good else "alpaca-wrong-secret-77c1"
        monkeypatch.setenv("T_ALPACA_KEY", af.API_KEY)
        monkeypatch.setenv("T_ALPACA_SECRET", secret)
        res = AlpacaBrokerResource(api_key=dg.EnvVar("T_ALPACA_KEY"),
                                   secret_key=dg.EnvVar("T_ALPACA_SECRET"),
                                   url_override=fake.url, timeout=2.0)
        yield Rig(res, [secret], "AAPL", 190.0)
    finally:
        fake.stop()


@contextmanager
def _ig(monkeypatch, good: bool) -> Iterator[Rig]:
    from trading_assets_tests.fakes import ig as igf

    fake = igf.FakeIG(username="ig-user", password="ig-pw-3c5d7b9e", api_key="ig-key-1f2e3d4c")
    fake.start()
    try:
        epic = "CS.D.EURUSD.MINI.IP"
        fake.set_price(epic, 1.085)
        password = "ig-pw-3c5d7b9e" if good else "ig-wrong-pw-55aa1c"
        monkeypatch.setenv("T_IG_USER", "ig-user")
        monkeypatch.setenv("T_IG_PASSWORD", password)
        monkeypatch.setenv("T_IG_KEY", "ig-key-1f2e3d4c")
        res = IGBrokerResource(username=dg.EnvVar("T_IG_USER"),
                               password=dg.EnvVar("T_IG_PASSWORD"),
                               api_key=dg.EnvVar("T_IG_KEY"), base_url=fake.base_url,
                               timeout=2.0)
        yield Rig(res, [password, "ig-key-1f2e3d4c"], epic, 1.085)
    finally:
        fake.stop()


RIGS = {"tradovate": _tradovate, "alpaca": _alpaca, "ig": _ig}


def _trade_asset(symbol: str, price: float) -> dg.AssetsDefinition:
    @dg.asset
    def place_one_order(context: dg.AssetExecutionContext,
                        broker: BrokerResource) -> dg.MaterializeResult:
        b = broker.get()
        context.log.info(f"trading through {b!r}")
        account = b.account()
        order = b.submit_order(OrderRequest("leak-1", symbol, Side.BUY, 1,
                                            reference_price=price))
        return dg.MaterializeResult(metadata={
            "broker": repr(b), "account": account.account_id, "equity": account.equity,
            "order": order.broker_order_id, "resource": repr(broker),
        })

    return place_one_order


def _everything_said(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance,
                     caplog, capfd) -> str:
    out, err = capfd.readouterr()
    run = instance.get_run_by_id(result.run_id)
    parts = [out, err, caplog.text, serialize_value(run)]
    parts += [serialize_value(e) for e in instance.all_logs(result.run_id)]
    parts += [repr(e) for e in result.all_events]
    for event in result.all_events:
        if event.is_step_failure:
            parts.append(str(event.step_failure_data.error))
    return "\n".join(parts)


@pytest.mark.parametrize("kind", sorted(RIGS))
@pytest.mark.parametrize("good", [True, False], ids=["login_ok", "login_fails"])
def test_secrets_never_reach_logs_events_metadata_or_errors(
        kind: str, good: bool, monkeypatch, caplog, capfd) -> None:
    caplog.set_level(logging.DEBUG)
    with RIGS[kind](monkeypatch, good) as rig, dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([_trade_asset(rig.symbol, rig.price)],
                                resources={"broker": rig.resource}, instance=instance,
                                raise_on_error=False)
        assert result.success is good
        said = _everything_said(result, instance, caplog, capfd)
    if good:
        (mat,) = result.asset_materializations_for_node("place_one_order")
        assert mat.metadata["order"].value  # a real order went through the fake
    else:
        # the login failure (class and message) is part of what we searched
        assert "STEP_FAILURE" in said and "SessionExpired" in said
    for secret in rig.secrets:
        assert secret not in said, f"{kind}: a secret value leaked"


def test_resource_reprs_mask_secrets() -> None:
    resources = [
        AlpacaBrokerResource(api_key="s3cr3t-a", secret_key="s3cr3t-b"),
        IGBrokerResource(username="u", password="s3cr3t-c", api_key="s3cr3t-d"),
        TradovateBrokerResource(username="u", password="s3cr3t-e", app_id="a", cid=1,
                                sec="s3cr3t-f"),
        TwelveDataResource(api_key="s3cr3t-g"),
        AlpacaBarsResource(api_key="s3cr3t-h", secret_key="s3cr3t-i"),
        IGPricesResource(username="u", password="s3cr3t-j", api_key="s3cr3t-k"),
    ]
    for res in resources:
        assert "s3cr3t" not in repr(res) and "s3cr3t" not in str(res)
        assert "s3cr3t" not in repr(res.get())


def test_get_outside_a_run_resolves_env_vars(monkeypatch) -> None:
    """A script or sensor helper calling `get()` must use the value, not the name."""
    monkeypatch.setenv("T_TV_PASSWORD", "tv-pw-from-env")
    monkeypatch.setenv("T_TV_CID", "42")
    res = TradovateBrokerResource(username="u", password=dg.EnvVar("T_TV_PASSWORD"),
                                  app_id="a", cid=dg.EnvVar.int("T_TV_CID"), sec="s")
    inner = res.get().inner
    assert inner._password == "tv-pw-from-env" and inner._cid == 42


def test_resource_config_shows_env_var_names_not_values(monkeypatch) -> None:
    monkeypatch.setenv("T_TV_PASSWORD", "tv-pw-should-stay-hidden")
    res = TradovateBrokerResource(username="u", password=dg.EnvVar("T_TV_PASSWORD"),
                                  app_id="a", cid=1, sec=dg.EnvVar("T_TV_PASSWORD"))
    shown: Any = res._convert_to_config_dictionary()
    assert shown["password"] == {"env": "T_TV_PASSWORD"}
    assert "tv-pw-should-stay-hidden" not in repr(shown)


# ----------------------------------------------------------------------------- endpoints


def test_each_venue_endpoint_comes_from_the_environment(monkeypatch) -> None:
    """ALPACA_BASE_URL / IG_BASE_URL / TRADOVATE_BASE_URL point the resource (what the CLI
    and every run use) at another server: here each venue's loopback fake."""
    from trading_assets_tests.fakes import alpaca as fa
    from trading_assets_tests.fakes import ig as fi
    from trading_assets_tests.fakes import tradovate as ft

    with fa.FakeAlpaca() as alpaca, fi.FakeIG() as ig, ft.TradovateFake() as tv:
        monkeypatch.setenv("ALPACA_API_KEY", fa.API_KEY)
        monkeypatch.setenv("ALPACA_SECRET_KEY", fa.SECRET_KEY)
        monkeypatch.setenv("ALPACA_BASE_URL", alpaca.url + "/")
        monkeypatch.setenv("IG_USERNAME", ig.username)
        monkeypatch.setenv("IG_PASSWORD", ig.password)
        monkeypatch.setenv("IG_API_KEY", ig.api_key)
        monkeypatch.setenv("IG_BASE_URL", ig.base_url)
        for name, value in {"USERNAME": ft.FAKE_USERNAME, "PASSWORD": ft.FAKE_PASSWORD, "APP_ID": ft.FAKE_APP_ID,
                            "CID": str(ft.FAKE_CID), "SEC": ft.FAKE_SEC, "BASE_URL": f"{tv.url}/v1"}.items():
            monkeypatch.setenv(f"TRADOVATE_{name}", value)
        accounts = {name: broker_resource(name).get().account() for name in ("alpaca", "ig", "tradovate")}
        assert all(a.equity > 0 for a in accounts.values())
        assert alpaca.requests and ig.requests and tv.requests, "every venue was reached at its loopback URL"


def test_a_malformed_endpoint_is_a_clear_error_before_any_call(monkeypatch) -> None:
    monkeypatch.setenv("ALPACA_BASE_URL", "127.0.0.1:9")
    with pytest.raises(ValueError, match=r"ALPACA_BASE_URL='127.0.0.1:9' is not an http\(s\) URL"):
        broker_resource("alpaca")
