"""Alerts as Dagster partitions: one dynamic partition per stored TradingView alert, keyed
so partitions sort by the time the alert fired (`20261202-143000-tv-<id>`), and the
run config that carries the alert's stored body into its run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from trading_assets.adapters.tradingview.alerts import alert_content_id, parse_tradingview_alert
from trading_assets.gateway.envelope import decode

FLOW = "trend_dmi"
alert_partitions = dg.DynamicPartitionsDefinition(name="trend_dmi_alerts")


class AlertConfig(dg.Config):
    """The stored alert as the gateway queued it (`gateway.envelope`: the alert JSON without
    the passphrase, when and from where it came)."""

    body: str
    received_at: str = ""


def alert_payload(body: str) -> dict[str, Any]:
    """The alert JSON (no passphrase) from a queued body (the gateway's envelope)."""
    return dict(decode(body).payload)


def alert_partition_key(body: str) -> str:
    """`<fired yyyymmdd-hhmmss UTC>-<alert id>`: unique per alert, sorted by firing time."""
    payload = alert_payload(body)
    try:
        at = parse_tradingview_alert(payload).at.astimezone(UTC)
    except ValueError:  # the gateway refuses these; the key still names the alert, its run fails naming the field
        at = datetime(1970, 1, 1, tzinfo=UTC)
    return f"{at:%Y%m%d-%H%M%S}-{alert_content_id(payload)}"


def alert_run_config(body: str) -> dict[str, Any]:
    """The run config that carries a queued alert into its run."""
    received_at = decode(body).received_at.isoformat()
    return {"ops": {f"{FLOW}__alert": {"config": {"body": body, "received_at": received_at}}}}
