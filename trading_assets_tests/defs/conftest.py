"""Fixtures for running the flows through Dagster on the embedded world in a temp dir."""

import dagster as dg
import pytest

from trading_assets.adapters.paper.broker import PaperBroker
from trading_assets.adapters.sqlite.ledger import SqliteLedger
from trading_assets.defs.ema_concentration import assets as flow
from trading_assets.defs.resources import local_resources


class FlowHarness:
    """Materialises the EMA concentration assets for a partition against one temp world."""

    def __init__(self, base):
        self.base = base
        self.resources = local_resources(base)

    def run(self, key: str, **overrides) -> dg.ExecuteInProcessResult:
        resources = {**self.resources, **overrides}
        return dg.materialize(flow.FLOW_ASSETS, resources=resources, partition_key=key, raise_on_error=False)

    @property
    def broker(self) -> PaperBroker:
        return self.resources["ema_concentration_broker"].get()

    @property
    def ledger(self) -> SqliteLedger:
        return self.resources["ledger"].get()


@pytest.fixture
def harness(tmp_path):
    return FlowHarness(tmp_path)


def metadata(result: dg.ExecuteInProcessResult, asset: str, key: str):
    mats = result.asset_materializations_for_node(f"ema_concentration__{asset}")
    assert mats, f"{asset} was not materialised"
    return mats[0].metadata[key].value


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's error message, causes included (what a user reads in the UI)."""
    lines = []
    for ev in result.all_events:
        error = getattr(ev.event_specific_data, "error", None) if ev.is_step_failure else None
        while error is not None:
            lines.append(error.message)
            error = error.cause
    return "\n".join(lines)
