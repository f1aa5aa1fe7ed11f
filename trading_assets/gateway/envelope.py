"""What the gateway stores in the alert queue for one alert: a JSON object (the queued
`body`), so the consumer (the alert worker, the sensor) gets the alert as received plus
where and when it came from, and never the passphrase.

    {
      "format": "tradingview-alert/1",
      "alert_id": "tv-…",                      # alert_content_id(payload), the dedupe key
      "symbol": "MNQ1!",                       # market_data.symbol, also the queue group
      "received_at": "2025-11-18T14:40:00.123456+00:00",
      "content_type": "text/plain",            # as sent (TradingView: JSON or text/plain)
      "remote_addr": "52.89.214.238",
      "payload": { ...the alert body as received, without "passphrase"... }
    }

`decode` reads one back (raises ValueError on anything else).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FORMAT = "tradingview-alert/1"


@dataclass(frozen=True)
class StoredAlert:
    alert_id: str
    symbol: str
    received_at: datetime
    content_type: str
    remote_addr: str
    payload: Mapping[str, Any]


def encode(alert_id: str, symbol: str, received_at: datetime, content_type: str, remote_addr: str,
           payload: Mapping[str, Any]) -> str:
    """The queued body (JSON). `payload` loses its passphrase here whatever the caller did."""
    body = {k: v for k, v in payload.items() if k != "passphrase"}
    return json.dumps({"format": FORMAT, "alert_id": alert_id, "symbol": symbol,
                       "received_at": received_at.isoformat(), "content_type": content_type,
                       "remote_addr": remote_addr, "payload": body},
                      separators=(",", ":"), allow_nan=False)  # ASCII: safe for SQS and SQLite alike


def decode(body: str) -> StoredAlert:
    doc = json.loads(body)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"not a stored TradingView alert (format {FORMAT}): {body[:80]!r}")
    payload = doc.get("payload")
    if not isinstance(payload, dict):
        raise ValueError("stored alert: payload is not an object")
    return StoredAlert(alert_id=str(doc["alert_id"]), symbol=str(doc["symbol"]),
                       received_at=datetime.fromisoformat(doc["received_at"]),
                       content_type=str(doc.get("content_type", "")), remote_addr=str(doc.get("remote_addr", "")),
                       payload=payload)
