"""The IG Fibonacci flow's settings: sensible defaults (EUR/USD), and every bad value is a
clear error naming it when the resource is built, before anything is fetched."""

import dagster as dg
import pytest

from trading_assets.defs.fib_retracement.settings import FibInstrument, FibRetracementSettings


def test_the_default_trades_eurusd_with_the_strategys_parameters():
    settings = FibRetracementSettings()
    assert [(i.epic, i.size, i.currency) for i in settings.instruments] == [("CS.D.EURUSD.MINI.IP", 1.0, "USD")]
    params = settings.params()
    assert (params.lookback, params.window, params.levels) == (40, 3, (0.382, 0.5, 0.618))
    assert settings.instrument("CS.D.EURUSD.MINI.IP").size == 1.0
    with pytest.raises(KeyError, match="not a configured instrument"):
        settings.instrument("CS.D.GBPUSD.MINI.IP")


@pytest.mark.parametrize(("instrument", "message"), [
    ({"epic": "eurusd"}, "not an IG epic"),
    ({"epic": "CS.D.EURUSD.MINI.IP", "size": 0}, "size must be > 0"),
    ({"epic": "CS.D.EURUSD.MINI.IP", "currency": "usd"}, "3-letter ISO code"),
])
def test_a_bad_instrument_names_what_is_wrong(instrument, message):
    with pytest.raises(ValueError, match=message):
        FibInstrument(**instrument)


@pytest.mark.parametrize(("fields", "message"), [
    ({"instruments": []}, "at least one IG market"),
    ({"instruments": [FibInstrument(epic="CS.D.EURUSD.MINI.IP")] * 2}, "each epic once"),
    ({"window": 20}, "lookback >= 2\\*window\\+3"),
    ({"levels": [0.2, 1.2]}, "levels must be ratios"),
    ({"stop_loss_ratio": 0.9}, "stop_loss_ratio must be one of"),
])
def test_bad_strategy_settings_fail_when_built(fields, message):
    with pytest.raises(ValueError, match=message):
        FibRetracementSettings(**fields)


def test_launchpad_config_is_checked_before_any_asset_runs():
    ran = []

    @dg.asset
    def uses_settings(fib_retracement: FibRetracementSettings) -> None:
        ran.append(fib_retracement.params())

    with pytest.raises(dg.DagsterResourceFunctionError) as info:
        dg.materialize([uses_settings], resources={"fib_retracement": FibRetracementSettings()},
                       run_config={"resources": {"fib_retracement": {"config": {"window": 20}}}})
    assert "lookback >= 2*window+3" in str(info.value.__cause__)  # the strategy's own words
    assert ran == []
    dg.materialize([uses_settings], resources={"fib_retracement": FibRetracementSettings()},
                   run_config={"resources": {"fib_retracement": {"config": {"window": 4}}}})
    assert ran[0].window == 4


def test_the_markets_can_be_set_for_every_path_by_one_variable(monkeypatch):
    from trading_assets.defs.resources import local_resources

    monkeypatch.setenv("TRADING_FIB_INSTRUMENTS", "CS.D.EURUSD.MINI.IP=2, CS.D.GBPUSD.MINI.IP")
    settings = local_resources()["fib_retracement"]
    assert [(i.epic, i.size) for i in settings.instruments] == [("CS.D.EURUSD.MINI.IP", 2.0),
                                                                ("CS.D.GBPUSD.MINI.IP", 1.0)]


@pytest.mark.parametrize(("value", "message"), [
    ("CS.D.EURUSD.MINI.IP=lots", "is not EPIC or EPIC=SIZE"),
    ("EURUSD=1", "epic 'EURUSD' is not an IG epic"),
    ("CS.D.EURUSD.MINI.IP=0", "size must be > 0"),
    ("CS.D.EURUSD.MINI.IP,CS.D.EURUSD.MINI.IP", "each epic once"),
])
def test_a_bad_markets_variable_names_the_variable_and_the_problem(monkeypatch, value, message):
    from trading_assets.defs.resources import local_resources

    monkeypatch.setenv("TRADING_FIB_INSTRUMENTS", value)
    with pytest.raises(ValueError, match="TRADING_FIB_INSTRUMENTS") as raised:
        local_resources()
    assert message in str(raised.value)


def test_trading_at_ig_locally_takes_igs_prices_through_the_bar_cache(monkeypatch, tmp_path):
    """A deal's levels must come from the market it is placed in: the replay tape is only for
    the paper broker."""
    from trading_assets.defs.resources import FIB_PRICES, local_resources
    from trading_assets.resources.market_data import (
        CachedMarketDataResource,
        IGPricesResource,
        ReplayMarketDataResource,
    )

    assert isinstance(local_resources(tmp_path)[FIB_PRICES], ReplayMarketDataResource)
    monkeypatch.setenv("TRADING_BROKER_FIB_RETRACEMENT", "ig")
    monkeypatch.setenv("TRADING_DATA_DIR", str(tmp_path))
    prices = local_resources(tmp_path)[FIB_PRICES]
    assert isinstance(prices, CachedMarketDataResource) and isinstance(prices.inner, IGPricesResource)
    assert (prices.store, prices.path) == ("sqlite", str(tmp_path / "bar_cache.sqlite"))
