"""What `python -m trading_assets alert` does: send alerts to a gateway as TradingView
would (one POST each, JSON or text/plain) and print each answer."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from trading_assets.gateway.constants import WEBHOOK_PATH
from trading_assets.gateway.samples import sample, samples

DEFAULT_URL = f"http://127.0.0.1:8000{WEBHOOK_PATH}"
CONTENT_TYPES = {"json": "application/json", "text": "text/plain; charset=utf-8"}


class CannotSend(Exception):
    """The alerts cannot be sent (a bad file, no gateway there): one line for the user."""


def load_file(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The alerts in a JSON file: one alert object, a list of them, or the samples' shape
    (`{"alerts": {name: alert}}`)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CannotSend(f"--file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CannotSend(f"--file {path}: not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("alerts"), dict):
        items = list(doc["alerts"].items())
    elif isinstance(doc, dict):
        items = [(path.stem, doc)]
    elif isinstance(doc, list):
        items = [(f"{path.stem}[{i}]", a) for i, a in enumerate(doc)]
    else:
        raise CannotSend(f"--file {path}: expected an alert object or a list of them, got {type(doc).__name__}")
    return [(name, alert) for name, alert in items]


def choose(names: Iterable[str] | None) -> list[tuple[str, dict[str, Any]]]:
    """The named samples (all of them, in order, when none is named); CannotSend for an
    unknown name."""
    if not names:
        return list(samples().items())
    try:
        return [(name, sample(name)) for name in names]
    except KeyError as exc:
        raise CannotSend(str(exc.args[0])) from None


def _zulu(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stamp_now(alerts: list[tuple[str, dict[str, Any]]],
              now: datetime | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The alerts as if they fired just now, one second apart in order (`timenow`), each
    bar (`timestamp`) opening one timeframe before: new content, so new alert ids."""
    now = (now or datetime.now(UTC)).replace(microsecond=0)
    out = []
    for i, (name, alert) in enumerate(alerts):
        alert = json.loads(json.dumps(alert))
        market = alert.get("market_data")
        if isinstance(market, dict):
            fired = now - timedelta(seconds=len(alerts) - 1 - i)
            minutes = int(market["timeframe"]) if str(market.get("timeframe", "")).isdigit() else 1
            market["timenow"] = _zulu(fired)
            market["timestamp"] = _zulu(fired.replace(second=0) - timedelta(minutes=minutes))
        out.append((name, alert))
    return out


def send(url: str, alerts: list[tuple[str, dict[str, Any]]], passphrase: str, content_type: str = "json",
         timeout: float = 5.0, say: Callable[[str], None] = print) -> int:
    """POST each alert (its passphrase filled in unless it has one) and print the answer;
    0 if every answer was a 200, 1 otherwise. CannotSend if nothing answers at `url`."""
    failures = 0
    with requests.Session() as session:
        for name, alert in alerts:
            body = {"passphrase": passphrase, **alert} if isinstance(alert, dict) else alert
            try:
                resp = session.post(url, data=json.dumps(body).encode(), timeout=timeout,
                                    headers={"Content-Type": CONTENT_TYPES[content_type]})
            except requests.ConnectionError:
                raise CannotSend(f"nothing answers at {url}: start the gateway (make dev, or python -m "
                                 "trading_assets gateway) or pass --url") from None
            except requests.Timeout:
                raise CannotSend(f"{url} did not answer within {timeout:g} s") from None
            try:
                answer = resp.json()
            except ValueError:
                answer = {"status": resp.reason, "error": resp.text[:200]}
            if not isinstance(answer, dict):
                answer = {"status": resp.reason, "error": str(answer)[:200]}
            status = str(answer.get("status", resp.reason))
            detail = answer.get("alert_id") if resp.status_code == 200 else answer.get("error", "")
            say(f"{name:<22} {resp.status_code} {status:<12} {detail or ''}".rstrip())
            failures += resp.status_code != 200
    return 1 if failures else 0
