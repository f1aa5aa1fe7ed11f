"""What every flow's Dagster objects carry, so the UI can be filtered and searched alike:
the owning team, and tags naming the flow and what kind of step an asset is."""

from __future__ import annotations

#: Shown on every asset and schedule; the team that answers for a trading flow.
OWNERS = ["team:trading"]


def flow_tags(flow: str, kind: str) -> dict[str, str]:
    """`flow` (e.g. ema_concentration) and `kind` (tick, backtest, alert, ...)."""
    return {"flow": flow, "kind": kind}


#: The IO manager key of the ledger-shaped assets (transactions, equity): the ledger's own
#: DynamoDB tables in aws, the same Parquet files as every other frame locally.
LEDGER_IO_MANAGER = "ledger_io_manager"
# Assets that call a broker: one such step at a time (dagster.yaml sets the pool's limit).
BROKER_POOL = "broker_api"
