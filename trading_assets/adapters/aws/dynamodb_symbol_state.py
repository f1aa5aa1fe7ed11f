"""The AWS per-symbol state store: `core.symbol_state.SymbolStateStore` in the orders table
(`<prefix>-orders`, generic `pk`/`sk` string keys; see `schema.py`), with the SQLite
store's semantics. No new table and no index: every read is by key or a key query on the
table itself, so all of them can be strongly consistent.

Items (low-level attribute maps; the encoders are the ledger's):

- state: `pk="state#<flow>#<symbol>"`, `sk="state"`: `flow`, `symbol`, `state` (canonical
  JSON string), `version` (number; a missing item is version 0), `alert_id` (the alert
  that wrote it), `updated_at` (ISO-8601 UTC).
- history: `pk="state#<flow>#<symbol>"`, `sk="transition#<version_after, 20 digits>"`:
  the transition (below). In the state's partition, so `history` is one consistent query,
  newest (highest version) first.
- by alert: `pk="transition#<flow>#<alert_id>"`, `sk="transition"`: the same transition
  attributes, so `transition_for` is one consistent get and "recorded once per alert" is
  a condition on one key.

Transition attributes: `flow`, `alert_id`, `symbol`, `outcome`, `reason`, `actions` (a
list of strings), `state_before` (canonical JSON string, or NULL), `state_after` and
`details` (canonical JSON strings), `version_after` (number), `recorded_at` (ISO-8601 UTC,
the caller's time). A flow name may not contain "#" (it separates the key's parts).

`commit` is one TransactWriteItems of three Puts: the state (condition
`attribute_not_exists(pk)` at expected version 0, else `version = :expected`), the
by-alert item (`attribute_not_exists(pk)`) and the history item (`attribute_not_exists(pk)`:
versions only grow, so it only fails if the state item was deleted or rewritten outside
this store: a RuntimeError, never a silent overwrite of history).

botocore resends a write after a timeout or a 5xx, so a cancelled transaction may be
cancelled by our own first attempt. The retry rule (the SQLite store's too): `commit` is
True when it wrote, and also when the alert's recorded transition is *identical* to the
one passed (the by-alert item equals the one we wrote, attribute for attribute:
`recorded_at` and `version_after` included); any other transition for an alert that has
one is False. The recorded item comes from the cancellation reason
(ReturnValuesOnConditionCheckFailure=ALL_OLD), or from a consistent get when the reason
does not carry it. ClientRequestToken is not relied upon (moto does not honour it, and
botocore's own token already covers its retries on AWS). A cancellation for a
transaction conflict or throttling (no condition failed) is retried a few times, then
is False (nothing was written: reload and re-apply).

Requests: `load`, `transition_for`: one GetItem; `history`: one Query (per 1 MB page);
`commit`: one TransactWriteItems, plus one GetItem when it is refused and the
cancellation did not carry the alert's recorded item (a lost race).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import botocore.exceptions

from trading_assets.adapters.aws import clients
from trading_assets.adapters.aws.dynamodb_ledger import _get_s, _s, now_iso, timestamp
from trading_assets.adapters.sqlite.symbol_state import canonical_json, check_commit
from trading_assets.core.symbol_state import RecordedTransition, StoredState

Item = dict[str, dict[str, Any]]

STATE_SK = "state"
TRANSITION_SK = "transition"
_RETRYABLE = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
_CONFLICT_RETRIES = 4


def _check_flow(flow: str) -> None:
    if "#" in flow:
        raise ValueError(f"flow name {flow!r} may not contain '#' (it separates the DynamoDB key's parts)")


def state_key(flow: str, symbol: str) -> Item:
    _check_flow(flow)
    return {"pk": _s(f"state#{flow}#{symbol}"), "sk": _s(STATE_SK)}


def history_key(flow: str, symbol: str, version: int) -> Item:
    _check_flow(flow)
    return {"pk": _s(f"state#{flow}#{symbol}"), "sk": _s(f"{TRANSITION_SK}#{version:020d}")}


def alert_key(flow: str, alert_id: str) -> Item:
    _check_flow(flow)
    return {"pk": _s(f"transition#{flow}#{alert_id}"), "sk": _s(TRANSITION_SK)}


def _n(value: int) -> dict[str, str]:
    return {"N": str(int(value))}


def transition_attributes(t: RecordedTransition) -> Item:
    """The transition's attributes (without the key), as both its items store them."""
    what = f"transition of alert {t.alert_id!r}"
    return {
        "flow": _s(t.flow),
        "alert_id": _s(t.alert_id),
        "symbol": _s(t.symbol),
        "outcome": _s(t.outcome),
        "reason": _s(t.reason),
        "actions": {"L": [_s(a) for a in t.actions]},
        "state_before": {"NULL": True} if t.state_before is None
        else _s(canonical_json(dict(t.state_before), f"{what} state_before")),
        "state_after": _s(canonical_json(dict(t.state_after), f"{what} state_after")),
        "version_after": _n(t.version_after),
        "recorded_at": _s(timestamp(t.recorded_at)),
        "details": _s(canonical_json(dict(t.details), f"{what} details")),
    }


def transition_from_item(item: Item) -> RecordedTransition:
    before = _get_s(item, "state_before")
    return RecordedTransition(
        flow=item["flow"]["S"], alert_id=item["alert_id"]["S"], symbol=item["symbol"]["S"],
        outcome=item["outcome"]["S"], reason=item["reason"]["S"],
        actions=tuple(a["S"] for a in item["actions"]["L"]),
        state_before=None if before is None else json.loads(before),
        state_after=json.loads(item["state_after"]["S"]), version_after=int(item["version_after"]["N"]),
        recorded_at=datetime.fromisoformat(item["recorded_at"]["S"]), details=json.loads(item["details"]["S"]),
    )


def _data(item: Item) -> Item:
    return {k: v for k, v in item.items() if k not in ("pk", "sk")}


class DynamoDbSymbolStateStore:
    """`core.symbol_state.SymbolStateStore` over the orders table (see the module docstring
    for the items and the retry rule)."""

    def __init__(self, region: str, table: str, *, client: Any = None) -> None:
        self.region = region
        self.table = table
        self._ddb = client if client is not None else clients.client("dynamodb", region)

    @property
    def client(self) -> Any:
        return self._ddb

    def _call(self, op: str, **kwargs: Any) -> Any:
        try:
            return getattr(self._ddb, op)(**kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            setup = clients.explain(exc, f"DynamoDB table {self.table}")
            if setup is not None:
                raise setup from exc
            raise

    def _get(self, key: Item) -> Item | None:
        return self._call("get_item", TableName=self.table, Key=key, ConsistentRead=True).get("Item")

    # ------------------------------------------------------------------ reads
    def load(self, flow: str, symbol: str) -> StoredState:
        item = self._get(state_key(flow, symbol))
        if item is None:
            return StoredState(flow, symbol, None, 0)
        return StoredState(flow, symbol, json.loads(item["state"]["S"]), int(item["version"]["N"]))

    def transition_for(self, flow: str, alert_id: str) -> RecordedTransition | None:
        item = self._get(alert_key(flow, alert_id))
        return None if item is None else transition_from_item(item)

    def history(self, flow: str, symbol: str, limit: int = 50) -> Sequence[RecordedTransition]:
        if limit <= 0:
            return []
        found: list[RecordedTransition] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table, "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": state_key(flow, symbol)["pk"], ":prefix": _s(f"{TRANSITION_SK}#")},
            "ScanIndexForward": False, "ConsistentRead": True,
        }
        while len(found) < limit:
            page = self._call("query", **kwargs, Limit=limit - len(found))
            found.extend(transition_from_item(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found

    # ------------------------------------------------------------------ the commit
    def commit(self, expected_version: int, transition: RecordedTransition) -> bool:
        check_commit(expected_version, transition)
        t = transition
        attributes = transition_attributes(t)  # validates (JSON) before anything is sent
        by_alert = {**alert_key(t.flow, t.alert_id), **attributes}
        state = {**state_key(t.flow, t.symbol), "flow": _s(t.flow), "symbol": _s(t.symbol),
                 "state": attributes["state_after"], "version": _n(t.version_after),
                 "alert_id": _s(t.alert_id), "updated_at": _s(now_iso())}
        if expected_version == 0:
            state_put: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            state_put = {"ConditionExpression": "version = :expected",
                         "ExpressionAttributeValues": {":expected": _n(expected_version)}}
        ops = [
            {"Put": {"TableName": self.table, "Item": state, **state_put}},
            {"Put": {"TableName": self.table, "Item": by_alert, "ConditionExpression": "attribute_not_exists(pk)",
                     "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
            {"Put": {"TableName": self.table, "Item": {**history_key(t.flow, t.symbol, t.version_after), **attributes},
                     "ConditionExpression": "attribute_not_exists(pk)"}},
        ]
        delay = 0.02
        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                # No ClientRequestToken of ours (see the module docstring): botocore's covers its retries.
                self._call("transact_write_items", TransactItems=ops)
                return True
            except botocore.exceptions.ClientError as exc:
                if clients.error_code(exc) != "TransactionCanceledException":
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                codes = [str(r.get("Code") or "None") for r in reasons] + ["Unknown"] * (3 - len(reasons))
                recorded = reasons[1].get("Item") if len(reasons) > 1 else None
                if recorded is None:  # the reason did not carry the alert's item (or it has none): read it
                    recorded = self._get(alert_key(t.flow, t.alert_id))
                if recorded is not None:
                    return _data(recorded) == attributes  # our own commit, landed by an earlier attempt
                if codes[0] == "ConditionalCheckFailed":
                    return False  # another writer won: reload and re-apply
                if codes[2] == "ConditionalCheckFailed":
                    raise RuntimeError(
                        f"history of {t.flow} {t.symbol} already has version {t.version_after} while the state is at "
                        f"{expected_version}: the state item was deleted or rewritten outside this store") from exc
                failed = set(codes) - {"None"}
                if not failed or not failed <= _RETRYABLE:
                    raise
                if attempt == _CONFLICT_RETRIES:
                    return False  # still conflicting: nothing written; the caller reloads and re-applies
                time.sleep(delay)
                delay *= 2
        return False  # pragma: no cover - the loop returns or raises
