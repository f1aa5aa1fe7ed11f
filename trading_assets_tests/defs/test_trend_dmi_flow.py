"""The TradingView alert flow through Dagster, one run per alert: the seed's rules through
the live path (entry, exit on the opposite DI cross, re-entry while waiting, flip),
exactly-once orders per (alert, leg), crash recovery from the recorded transition, and
alerts that are stale, too old, for an unmapped ticker or mismatched with their run."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from trading_assets.adapters.tradingview.alerts import alert_content_id
from trading_assets.cli import QUIET_LOGS
from trading_assets.defs.resources import local_resources
from trading_assets.defs.trend_dmi.alerts import FLOW, alert_partition_key, alert_run_config
from trading_assets.defs.trend_dmi.assets import FLOW_ASSETS, trend_dmi_alert_job
from trading_assets.defs.trend_dmi.settings import TrendDmiSettings
from trading_assets.gateway.envelope import encode

SAMPLES = json.loads((Path(__file__).resolve().parents[2] / "trading_assets" / "data" /
                      "tradingview_alerts.json").read_text())["alerts"]
def alert_body(name: str, seconds_ago: float = 30, ticker: str | None = None) -> str:
    """A sample alert fired `seconds_ago` before now (now when called: a module-level time
    would age past max_alert_age_seconds in a long suite), as the gateway stores it."""
    now = datetime.now(UTC).replace(microsecond=0)
    payload = json.loads(json.dumps(SAMPLES[name]))
    payload["market_data"]["timenow"] = (now - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")
    if ticker:
        payload["market_data"]["symbol"] = ticker
    return encode(alert_content_id(payload), payload["market_data"]["symbol"], now, "application/json",
                  "127.0.0.1", payload)


class AlertWorld:
    def __init__(self, base: Path, instance: dg.DagsterInstance, **overrides):
        self.resources = local_resources(base, **overrides)
        self.instance = instance
        self.job = dg.Definitions(assets=FLOW_ASSETS, jobs=[trend_dmi_alert_job],
                                  resources=self.resources).resolve_job_def("trend_dmi_alert_job")

    def run(self, body: str, selection=None) -> dg.ExecuteInProcessResult:
        key = alert_partition_key(body)
        self.instance.add_dynamic_partitions("trend_dmi_alerts", [key])
        job = self.job if selection is None else self.job.get_subset(asset_selection=set(selection))
        return job.execute_in_process(partition_key=key, instance=self.instance, raise_on_error=False,
                                      run_config={**alert_run_config(body), **QUIET_LOGS})

    @property
    def broker(self):
        return self.resources["trend_dmi_broker"].get()

    @property
    def ledger(self):
        return self.resources["ledger"].get()

    def position(self, instrument: str = "MNQZ6") -> float:
        return {p.symbol: p.qty for p in self.broker.positions()}.get(instrument, 0.0)

    def state(self, ticker: str = "MNQ1!") -> dict:
        return dict(self.resources["symbol_state"].get().load(FLOW, ticker).state or {})


def transition_of(result) -> dict:
    [mat] = result.asset_materializations_for_node("trend_dmi__transition")
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setattr("trading_assets.core.instruments.front_month", lambda root, on: f"{root}Z6")
    with dg.instance_for_test() as instance:
        yield AlertWorld(tmp_path, instance)


def test_the_seeds_rules_through_the_live_path(world):
    """Blue flip enters long; DI- over DI+ exits and waits; DI+ over DI- re-enters while the
    trend is still blue; the red flip closes the long and goes short (two legs)."""
    steps = [("long_entry", 1.0), ("di_minus_over_plus", 0.0), ("di_plus_over_minus", 1.0), ("short_entry", -1.0)]
    for i, (name, position) in enumerate(steps):
        result = world.run(alert_body(name, seconds_ago=60 - 10 * i))
        assert result.success, name
        assert transition_of(result)["outcome"] == "applied", name
        assert world.position() == position, name
    assert world.state() | {"last_event_at": None, "last_event_ids": None} == {
        "symbol": "MNQ1!", "position": "SHORT", "trend_color": "RED", "waiting_for_reentry": False,
        "last_event_at": None, "last_event_ids": None}
    intents = world.ledger.intents(FLOW)
    assert [(i.leg, i.side.value, i.status.value) for i in intents] == [
        ("open_long", "buy", "filled"), ("close_long", "sell", "filled"), ("open_long", "buy", "filled"),
        ("close_long", "sell", "filled"), ("open_short", "sell", "filled")]


def test_a_rerun_of_an_alert_places_nothing_twice(world):
    body = alert_body("long_entry")
    assert world.run(body).success and world.run(body).success
    assert len(world.broker.orders()) == 1 and world.position() == 1.0
    assert world.state()["position"] == "LONG"


def test_a_crash_after_the_state_commit_places_the_recorded_orders_on_rerun(world):
    """The run died after the transition was committed and before the orders: the rerun
    finds the alert's recorded transition (not a duplicate to ignore) and trades it once."""
    body = alert_body("long_entry")
    partial = world.run(body, selection=[dg.AssetKey([FLOW, "alert"]), dg.AssetKey([FLOW, "transition"])])
    assert partial.success and world.broker.orders() == [] and world.state()["position"] == "LONG"
    rerun = world.run(body)
    assert rerun.success and transition_of(rerun)["reason"].startswith("trend unknown -> BLUE")
    assert len(world.broker.orders()) == 1 and world.position() == 1.0


def test_a_stale_alert_is_recorded_and_trades_nothing(world):
    assert world.run(alert_body("long_entry", seconds_ago=10)).success
    late = world.run(alert_body("di_minus_over_plus", seconds_ago=50))  # fired before the entry
    assert late.success
    assert transition_of(late)["outcome"] == "rejected" and "stale" in transition_of(late)["reason"]
    assert world.position() == 1.0 and len(world.broker.orders()) == 1


def test_an_alert_too_old_to_trade_is_recorded_with_the_reason(world):
    old = world.run(alert_body("long_entry", seconds_ago=3600))
    assert old.success and transition_of(old)["outcome"] == "rejected"
    assert "too old" in transition_of(old)["reason"] and world.broker.orders() == []


def test_an_unmapped_ticker_is_stored_and_ignored_with_the_reason(world):
    result = world.run(alert_body("long_entry", ticker="ES1!"))
    assert result.success
    assert transition_of(result)["outcome"] == "ignored"
    assert "ES1! is not mapped" in transition_of(result)["reason"] and world.broker.orders() == []


def test_a_mapped_fixed_instrument_and_quantity_are_used(tmp_path):
    settings = TrendDmiSettings(instruments={"MNQ1!": "MNQH7"}, quantity={"MNQ1!": 3})
    with dg.instance_for_test() as instance:
        world = AlertWorld(tmp_path, instance, trend_dmi=settings)
        assert world.run(alert_body("long_entry")).success
        assert world.position("MNQH7") == 3.0


def test_a_run_whose_config_is_another_alert_fails_clearly(world):
    body, other = alert_body("long_entry"), alert_body("short_entry")
    key = alert_partition_key(body)
    world.instance.add_dynamic_partitions("trend_dmi_alerts", [key])
    result = world.job.execute_in_process(partition_key=key, instance=world.instance, raise_on_error=False,
                                          run_config={**alert_run_config(other), **QUIET_LOGS})
    assert not result.success and world.broker.orders() == []
