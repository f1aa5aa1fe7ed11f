"""The AWS ledger: `core.ports.Ledger` over the three DynamoDB tables of `schema.py`, with
the SQLite ledger's semantics (same return values, same frames, same errors).

Items (low-level boto3 attribute maps; the codec below is shared with the DynamoDB IO
manager, so a row written by either is one item):

- transactions table: one item per fill or baseline position, key `transaction_id`, with
  `flow_tick` = "flow#partition_key" for the `by_tick` index. Numbers are DynamoDB numbers
  written from `repr(float)` (exact round trip); NaN/inf are refused. Timestamps are
  ISO-8601 UTC strings (so the `by_account`/`by_flow` sort keys sort in time).
- equity table: one item per (flow, partition_key); `positions` is the JSON the SQLite
  ledger stores.
- orders table: plans (`plan#<flow>` / partition_key), intents (`intent#<id>` / "intent")
  and account baselines (`baseline#<account>` / "baseline").

Plan once, for any number of intents (TransactWriteItems stops at 100 items), in a
*header-first* commit:

1. Lock: the plan item is put `pending` with a fresh token and a lease, by a conditional
   put (`attribute_not_exists`, or the steal of a *pending* plan whose lease ran out: its
   writer died). Exactly one run holds a tick. A run that finds the plan committed returns
   False at once; one that finds it pending waits (bounded by the lease) for it to commit,
   as the SQLite ledger's loser waits on the write lock.
2. The owner writes the intents, tagged with its token, in transactions of at most 99
   intents plus one fence on the plan item (token still ours, still pending); the last
   transaction also flips the plan to `committed`. For a plan of up to 99 intents that is
   one transaction after the lock.
3. Readers see a plan only when committed, and only its intents whose token equals the
   plan's. An intent item may be overwritten only while it is absent or carries the
   writer's own token or a token of a writer that lost the tick (listed on the plan as
   `dead` when its lease was stolen): so a committed plan's intents are never touched
   again, a stale owner cannot overwrite the new owner's intents, and a loser's leftovers
   are invisible.

botocore retries a write after a timeout, so a conditional failure may be our own earlier
attempt: every conditional write carries a token that is compared on failure (the lock,
the commit, `claim_intent`, `record_transaction`), never relying on ClientRequestToken
(which moto does not honour). A plan item lists its intent ids, so a plan holds up to
about 10,000 intents (DynamoDB's 400 KB item limit).
Account baselines are committed the same way (baseline item = header, its transactions
= children tagged `baseline_token`).

Reads go through keys and the indexes; `transactions()` with no filter at all is the only
scan. Indexes are eventually consistent on AWS: a tick's intents are read from `by_tick`
and checked against the plan's own list of ids (a strongly consistent get), and any the
index does not show yet are fetched by key with consistent reads. Every status change is
a conditional write on the table itself, so a stale index row can delay work, never
double an order.
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal, DecimalException
from typing import Any

import botocore.exceptions
import pandas as pd
from boto3.dynamodb.types import DYNAMODB_CONTEXT

from trading_assets.adapters.aws import clients
from trading_assets.adapters.aws.schema import table_specs
from trading_assets.core.ports import (
    FINAL_INTENT_STATUSES,
    EquitySnapshot,
    IntentStatus,
    OrderIntent,
    Side,
    Transaction,
)

Item = dict[str, dict[str, Any]]

#: Columns (and order) of `transactions()` frames: the SQLite ledger's.
TRANSACTION_COLUMNS = [
    "transaction_id", "account", "flow", "partition_key", "symbol", "side", "qty", "price", "commission",
    "kind", "executed_at", "client_order_id", "recorded_at",
]
#: Columns (and order) of `equity_curve()` frames: the SQLite ledger's.
EQUITY_COLUMNS = ["partition_key", "as_of", "account", "cash", "equity", "buying_power", "positions"]

INTENT_FIELDS = frozenset({"status", "broker_order_id", "filled_qty", "filled_avg_price", "reason", "qty", "extra"})
_FINAL = frozenset(s.value for s in FINAL_INTENT_STATUSES)
_MAX_TRANSACT = 100  # DynamoDB's TransactWriteItems limit
_CHUNK = _MAX_TRANSACT - 1  # children per transaction, plus the fence/commit on the header
_MAX_DEAD = _MAX_TRANSACT - 1  # tokens an IN (...) may list
PENDING, COMMITTED = "pending", "committed"


# ============================================================================ the item codec


def number(value: object, what: str) -> dict[str, str]:
    """A DynamoDB number written from the float's shortest repr (exact round trip).
    NaN/inf and numbers outside DynamoDB's range are a ValueError naming `what`."""
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a number, got {value!r}") from exc
    if not math.isfinite(f):
        raise ValueError(f"{what} is {f!r}: the DynamoDB ledger stores finite numbers only")
    try:
        d = DYNAMODB_CONTEXT.create_decimal(Decimal(repr(f)))
    except DecimalException as exc:
        raise ValueError(f"{what} {f!r} is outside DynamoDB's number range (38 digits, 1e-130..1e126)") from exc
    return {"N": str(d)}


def _opt_number(value: object, what: str) -> dict[str, Any]:
    return {"NULL": True} if _missing(value) else number(value, what)


def _s(value: object) -> dict[str, str]:
    return {"S": str(value)}


def _opt_s(value: object) -> dict[str, Any]:
    return {"NULL": True} if _missing(value) else {"S": str(value)}


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def timestamp(value: datetime) -> str:
    """ISO-8601 in UTC (naive means UTC): strings that sort in time."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat()


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _get_s(item: Item, name: str) -> str | None:
    v = item.get(name)
    return None if v is None or "NULL" in v else v["S"]


def _get_n(item: Item, name: str) -> float | None:
    v = item.get(name)
    return None if v is None or "NULL" in v else float(v["N"])


def flow_tick(flow: str, partition_key: str) -> str:
    return f"{flow}#{partition_key}"


# ---------------------------------------------------------------- transactions


def transaction_item(txn: Transaction, *, recorded_at: str, baseline_token: str | None = None) -> Item:
    """The TransactionTable item of `txn` (what the ledger and the IO manager both write)."""
    what = f"transaction {txn.transaction_id!r}"
    item: Item = {
        "transaction_id": _s(txn.transaction_id),
        "flow_tick": _s(flow_tick(txn.flow, txn.partition_key)),
        "account": _s(txn.account),
        "flow": _s(txn.flow),
        "partition_key": _s(txn.partition_key),
        "symbol": _s(txn.symbol),
        "side": _s(Side(txn.side).value),
        "qty": number(txn.qty, f"{what} qty"),
        "price": number(txn.price, f"{what} price"),
        "commission": number(txn.commission, f"{what} commission"),
        "kind": _s(txn.kind),
        "executed_at": _s(timestamp(txn.executed_at)),
        "client_order_id": _opt_s(txn.client_order_id),
        "recorded_at": _s(recorded_at),
    }
    if baseline_token is not None:
        item["baseline_token"] = _s(baseline_token)
    return item


def transaction_from_item(item: Item) -> Transaction:
    return Transaction(
        transaction_id=item["transaction_id"]["S"], account=item["account"]["S"], flow=item["flow"]["S"],
        partition_key=item["partition_key"]["S"], symbol=item["symbol"]["S"], side=Side(item["side"]["S"]),
        qty=float(item["qty"]["N"]), price=float(item["price"]["N"]), commission=float(item["commission"]["N"]),
        kind=item["kind"]["S"], executed_at=datetime.fromisoformat(item["executed_at"]["S"]),
        client_order_id=_get_s(item, "client_order_id"),
    )


def transaction_record(item: Item) -> tuple:
    """The item as a frame row (TRANSACTION_COLUMNS order, timestamps still strings)."""
    return (
        item["transaction_id"]["S"], item["account"]["S"], item["flow"]["S"], item["partition_key"]["S"],
        item["symbol"]["S"], item["side"]["S"], float(item["qty"]["N"]), float(item["price"]["N"]),
        float(item["commission"]["N"]), item["kind"]["S"], item["executed_at"]["S"],
        _get_s(item, "client_order_id"), item["recorded_at"]["S"],
    )


def transactions_frame(items: Iterable[Item]) -> pd.DataFrame:
    """Items as the SQLite ledger's `transactions()` frame: same columns, oldest first
    (executed_at, then recording order), built the way `read_sql_query` builds it so the
    dtypes are the same (float64/str, or object when empty; executed_at tz-aware UTC)."""
    rows = sorted((transaction_record(i) for i in items), key=lambda r: (r[10], r[12], r[0]))
    frame = pd.DataFrame.from_records(rows, columns=TRANSACTION_COLUMNS, coerce_float=True)
    frame["executed_at"] = pd.to_datetime(frame["executed_at"], utc=True, format="ISO8601")
    return frame


def transaction_from_row(row: Mapping[str, Any]) -> tuple[Transaction, str | None]:
    """A `transactions()` frame row back to a Transaction and its recorded_at (None if the
    frame has none)."""
    cid = row.get("client_order_id")
    recorded = row.get("recorded_at")
    txn = Transaction(
        transaction_id=str(row["transaction_id"]), account=str(row["account"]), flow=str(row["flow"]),
        partition_key=str(row["partition_key"]), symbol=str(row["symbol"]), side=Side(row["side"]),
        qty=row["qty"], price=row["price"], commission=row["commission"], kind=str(row["kind"]),
        executed_at=pd.Timestamp(row["executed_at"]).to_pydatetime(),
        client_order_id=None if _missing(cid) else str(cid),
    )
    return txn, None if _missing(recorded) else str(recorded)


# ---------------------------------------------------------------- equity


def equity_item(snapshot: EquitySnapshot, *, recorded_at: str) -> Item:
    """The EquityTable item of `snapshot` (what the ledger and the IO manager both write)."""
    what = f"equity {snapshot.flow} {snapshot.partition_key}"
    return {
        "flow": _s(snapshot.flow),
        "partition_key": _s(snapshot.partition_key),
        "account": _s(snapshot.account),
        "as_of": _s(timestamp(snapshot.as_of)),
        "cash": number(snapshot.cash, f"{what} cash"),
        "equity": number(snapshot.equity, f"{what} equity"),
        "buying_power": number(snapshot.buying_power, f"{what} buying_power"),
        "positions": _s(json.dumps(dict(snapshot.positions), sort_keys=True)),
        "recorded_at": _s(recorded_at),
    }


def equity_from_item(item: Item) -> EquitySnapshot:
    return EquitySnapshot(
        flow=item["flow"]["S"], partition_key=item["partition_key"]["S"], account=item["account"]["S"],
        as_of=datetime.fromisoformat(item["as_of"]["S"]), cash=float(item["cash"]["N"]),
        equity=float(item["equity"]["N"]), buying_power=float(item["buying_power"]["N"]),
        positions=json.loads(item["positions"]["S"]),
    )


def equity_record(item: Item) -> tuple:
    """The item as an equity-curve row (EQUITY_COLUMNS order, as_of still a string)."""
    return (item["partition_key"]["S"], item["as_of"]["S"], item["account"]["S"], float(item["cash"]["N"]),
            float(item["equity"]["N"]), float(item["buying_power"]["N"]), item["positions"]["S"])


_TYPED_EQUITY_ROW = ("", "2000-01-01T00:00:00+00:00", "", 0.0, 0.0, 0.0, "{}")


def equity_frame(items: Iterable[Item], *, typed_when_empty: bool = False) -> pd.DataFrame:
    """Items as the SQLite ledger's `equity_curve()` frame, ordered by as_of. Empty, it has
    SQLite's object columns, or (`typed_when_empty`) the dtypes of a non-empty curve, as
    a curve filtered down to no rows has."""
    rows = sorted((equity_record(i) for i in items), key=lambda r: (r[1], r[0]))
    if not rows and typed_when_empty:
        return equity_frame([_row_item(_TYPED_EQUITY_ROW)]).iloc[0:0].reset_index(drop=True)
    frame = pd.DataFrame.from_records(rows, columns=EQUITY_COLUMNS, coerce_float=True)
    frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True, format="ISO8601")
    return frame


def _row_item(row: tuple) -> Item:
    pk, as_of, account, cash, eq, bp, positions = row
    return {"partition_key": _s(pk), "as_of": _s(as_of), "account": _s(account), "cash": number(cash, "cash"),
            "equity": number(eq, "equity"), "buying_power": number(bp, "buying_power"), "positions": _s(positions)}


def equity_from_row(flow: str, row: Mapping[str, Any]) -> EquitySnapshot:
    """An `equity_curve()` frame row back to a snapshot of `flow`."""
    positions = row["positions"]
    return EquitySnapshot(
        flow=flow, partition_key=str(row["partition_key"]), account=str(row["account"]),
        as_of=pd.Timestamp(row["as_of"]).to_pydatetime(), cash=row["cash"], equity=row["equity"],
        buying_power=row["buying_power"], positions=json.loads(positions) if isinstance(positions, str) else positions,
    )


# ---------------------------------------------------------------- intents


def _plan_key(flow: str, partition_key: str) -> Item:
    return {"pk": _s(f"plan#{flow}"), "sk": _s(partition_key)}


def _intent_key(client_order_id: str) -> Item:
    return {"pk": _s(f"intent#{client_order_id}"), "sk": _s("intent")}


def _baseline_key(account: str) -> Item:
    return {"pk": _s(f"baseline#{account}"), "sk": _s("baseline")}


def intent_item(intent: OrderIntent, position: int, plan_token: str, now: str) -> Item:
    what = f"order intent {intent.client_order_id!r}"
    status = IntentStatus(intent.status).value
    open_sk = f"{intent.partition_key}#{position:06d}"
    item: Item = {
        **_intent_key(intent.client_order_id),
        "gsi1pk": _s(flow_tick(intent.flow, intent.partition_key)),
        "gsi1sk": _s(f"{position:06d}"),
        "open_sk": _s(open_sk),
        "plan_token": _s(plan_token),
        "client_order_id": _s(intent.client_order_id),
        "flow": _s(intent.flow),
        "partition_key": _s(intent.partition_key),
        "account": _s(intent.account),
        "symbol": _s(intent.symbol),
        "side": _s(Side(intent.side).value),
        "qty": number(intent.qty, f"{what} qty"),
        "leg": _s(intent.leg),
        "reference_price": _opt_number(intent.reference_price, f"{what} reference_price"),
        "order_type": _s(intent.order_type),
        "status": _s(status),
        "broker_order_id": _opt_s(intent.broker_order_id),
        "filled_qty": number(intent.filled_qty, f"{what} filled_qty"),
        "filled_avg_price": _opt_number(intent.filled_avg_price, f"{what} filled_avg_price"),
        "reason": _opt_s(intent.reason),
        "extra": _s(json.dumps(intent.extra)),
        "created_at": _s(now),
        "updated_at": _s(now),
    }
    if status not in _FINAL:
        item["gsi2pk"] = _s(intent.flow)
        item["gsi2sk"] = _s(open_sk)
    return item


def intent_from_item(item: Item) -> OrderIntent:
    return OrderIntent(
        client_order_id=item["client_order_id"]["S"], flow=item["flow"]["S"],
        partition_key=item["partition_key"]["S"], account=item["account"]["S"], symbol=item["symbol"]["S"],
        side=Side(item["side"]["S"]), qty=float(item["qty"]["N"]), leg=item["leg"]["S"],
        reference_price=_get_n(item, "reference_price"), order_type=item["order_type"]["S"],
        status=IntentStatus(item["status"]["S"]), broker_order_id=_get_s(item, "broker_order_id"),
        filled_qty=float(item["filled_qty"]["N"]), filled_avg_price=_get_n(item, "filled_avg_price"),
        reason=_get_s(item, "reason"), extra=json.loads(item["extra"]["S"]),
    )


# ============================================================================ the ledger


class _Lost(Exception):
    """Our pending header was taken over (lease stolen) while we wrote its children."""


class DynamoDbLedger:
    """`core.ports.Ledger` over DynamoDB (see the module docstring for the item shapes and
    how a plan of any size is committed once).

    `plan_lease_seconds` bounds how long a run that died mid-plan blocks its tick (after
    that another run may take the tick over); a plan of 500 intents commits in well under
    a second."""

    def __init__(self, region: str, transactions_table: str, equity_table: str, orders_table: str, *,
                 client: Any = None, plan_lease_seconds: float = 30.0) -> None:
        self.region = region
        self.transactions_table = transactions_table
        self.equity_table = equity_table
        self.orders_table = orders_table
        self.plan_lease_seconds = plan_lease_seconds
        self._ddb = client if client is not None else clients.client("dynamodb", region)
        # Committed headers never change again: remember them (plans, baselines).
        self._committed: dict[tuple[str, str], Item] = {}
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        return self._ddb

    # ------------------------------------------------------------------ calls
    def _call(self, op: str, tables: Sequence[str], **kwargs: Any) -> Any:
        try:
            return getattr(self._ddb, op)(**kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            what = ("DynamoDB table " + tables[0]) if len(tables) == 1 else \
                "DynamoDB tables " + " / ".join(tables)
            setup = clients.explain(exc, what)
            if setup is not None:
                raise setup from exc
            raise

    def _query(self, table: str, **kwargs: Any) -> Iterator[Item]:
        while True:
            page = self._call("query", [table], TableName=table, **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _scan(self, table: str) -> Iterator[Item]:
        kwargs: dict[str, Any] = {}
        while True:
            page = self._call("scan", [table], TableName=table, **kwargs)
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _get(self, table: str, key: Item) -> Item | None:
        return self._call("get_item", [table], TableName=table, Key=key, ConsistentRead=True).get("Item")

    def _batch_get(self, table: str, keys: Sequence[Item]) -> list[Item]:
        """Consistent reads by key (100 per request; unprocessed keys retried)."""
        found: list[Item] = []
        for start in range(0, len(keys), 100):
            request = {table: {"Keys": list(keys[start:start + 100]), "ConsistentRead": True}}
            delay = 0.05
            while request:
                answer = self._call("batch_get_item", [table], RequestItems=request)
                found.extend(answer.get("Responses", {}).get(table, []))
                request = answer.get("UnprocessedKeys") or {}
                if request:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
        return found

    # ------------------------------------------------------------------ headers
    def _header(self, kind: str, name: str, key: Item) -> Item | None:
        """The header item (plan or baseline) if committed, else None."""
        cached = self._committed.get((kind, name))
        if cached is not None:
            return cached
        item = self._get(self.orders_table, key)
        if item is None or item["state"]["S"] != COMMITTED:
            return None
        with self._lock:
            if len(self._committed) > 4096:
                self._committed.clear()
            self._committed[(kind, name)] = item
        return item

    def _acquire(self, key: Item, header: Item, token: str) -> list[str] | None:
        """Own the header (put it pending with our token and a lease): the dead tokens we
        may overwrite, or None when the header is committed (by another run)."""
        table = self.orders_table
        current: Item | None = None
        delay = 0.02
        while True:
            now = time.time()
            if current is None:
                cond, values, dead = "attribute_not_exists(pk)", {}, []
            elif float(current["lease_until"]["N"]) < now:
                cond = "#state = :pending AND #token = :old AND lease_until < :now"
                values = {":pending": _s(PENDING), ":old": current["token"], ":now": number(now, "now")}
                dead = [*(v["S"] for v in current.get("dead", {}).get("L", [])), current["token"]["S"]]
            else:  # a live run is writing this header: wait for it to commit (or die)
                time.sleep(delay)
                delay = min(delay * 2, 0.25)
                current = self._get(table, key)
                if current is not None and current["state"]["S"] == COMMITTED:
                    return None
                continue
            item = {**header, "state": _s(PENDING), "token": _s(token),
                    "lease_until": number(now + self.plan_lease_seconds, "lease_until"),
                    "dead": {"L": [_s(t) for t in dead[-_MAX_DEAD:]]}}
            kwargs: dict[str, Any] = {"ConditionExpression": cond, "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}
            if values:
                kwargs |= {"ExpressionAttributeNames": {"#state": "state", "#token": "token"},
                           "ExpressionAttributeValues": values}
            try:
                self._call("put_item", [table], TableName=table, Item=item, **kwargs)
                return dead[-_MAX_DEAD:]
            except botocore.exceptions.ClientError as exc:
                if clients.error_code(exc) != "ConditionalCheckFailedException":
                    raise
                current = exc.response.get("Item")
            if current is not None and current["token"]["S"] == token:  # our own write, retried
                return [v["S"] for v in current.get("dead", {}).get("L", [])]
            if current is not None and current["state"]["S"] == COMMITTED:
                return None

    def _write_children(self, key: Item, token: str, dead: list[str], table: str, key_attr: str,
                        fence_attr: str, children: Sequence[Item], describe: Any) -> None:
        """Write the children in transactions fenced on the header, the last one committing
        it. Raises _Lost if the header was taken over, ValueError if a child belongs to
        someone else."""
        allowed = [token, *dead]
        tokens = {f":t{i}": _s(t) for i, t in enumerate(allowed)}
        child_cond = (f"attribute_not_exists({key_attr}) OR {fence_attr} IN ("
                      + ", ".join(tokens) + ")")
        header_names = {"#state": "state", "#token": "token"}
        header_values = {":me": _s(token), ":pending": _s(PENDING)}
        chunks = [children[i:i + _CHUNK] for i in range(0, len(children), _CHUNK)] or [[]]
        for n, chunk in enumerate(chunks):
            ops: list[dict[str, Any]] = [
                {"Put": {"TableName": table, "Item": child, "ConditionExpression": child_cond,
                         "ExpressionAttributeValues": tokens}} for child in chunk]
            guard = {"TableName": self.orders_table, "Key": key,
                     "ConditionExpression": "#token = :me AND #state = :pending",
                     "ExpressionAttributeNames": header_names}
            if n == len(chunks) - 1:
                ops.append({"Update": {**guard, "UpdateExpression": "SET #state = :committed REMOVE lease_until",
                                       "ExpressionAttributeValues": {**header_values,
                                                                     ":committed": _s(COMMITTED)}}})
            else:
                ops.append({"ConditionCheck": {**guard, "ExpressionAttributeValues": header_values}})
            tables = sorted({table, self.orders_table})
            try:
                # No ClientRequestToken of ours: botocore makes one per call and keeps it across its
                # own retries; one reused by a later attempt would be answered "done" by AWS unapplied.
                self._call("transact_write_items", tables, TransactItems=ops)
            except botocore.exceptions.ClientError as exc:
                if clients.error_code(exc) != "TransactionCanceledException":
                    raise
                # The header's verdict first: if the tick was taken over, that is why.
                header = self._get(self.orders_table, key)
                if header is not None and header["token"]["S"] == token and header["state"]["S"] == COMMITTED:
                    return  # our commit went through on an earlier attempt of this call
                if header is None or header["token"]["S"] != token:
                    raise _Lost() from exc
                reasons = exc.response.get("CancellationReasons") or []
                codes = [r.get("Code") for r in reasons]
                bad = [chunk[i] for i, c in enumerate(codes[:len(chunk)]) if c == "ConditionalCheckFailed"]
                if bad:
                    raise ValueError(describe(bad[0])) from exc
                raise

    def _release(self, key: Item, token: str) -> None:
        """Drop our pending header (after a refused child), so no one waits for its lease."""
        try:
            self._call("delete_item", [self.orders_table], TableName=self.orders_table, Key=key,
                       ConditionExpression="#token = :me AND #state = :pending",
                       ExpressionAttributeNames={"#state": "state", "#token": "token"},
                       ExpressionAttributeValues={":me": _s(token), ":pending": _s(PENDING)})
        except botocore.exceptions.ClientError as exc:
            if clients.error_code(exc) != "ConditionalCheckFailedException":
                raise

    def _commit_group(self, key: Item, header: Item, table: str, key_attr: str, fence_attr: str,
                      children: Sequence[Item], token: str, describe: Any) -> bool:
        """Commit header + children once: True if this call committed them, False if the
        header is (or becomes) committed by another run."""
        while True:
            dead = self._acquire(key, header, token)
            if dead is None:
                return False
            try:
                self._write_children(key, token, dead, table, key_attr, fence_attr, children, describe)
                return True
            except _Lost:
                continue  # another run took the header over: wait for it (or take it back)
            except ValueError:
                self._release(key, token)
                raise

    # ------------------------------------------------------------------ plans and intents
    def record_plan(self, flow: str, partition_key: str, intents: Sequence[OrderIntent]) -> bool:
        intents = list(intents)
        ids = [i.client_order_id for i in intents]
        if len(set(ids)) != len(ids):
            dup = sorted({c for c in ids if ids.count(c) > 1})
            raise ValueError(f"plan {flow} {partition_key} lists client order ids twice: {dup}")
        for i in intents:
            if (i.flow, i.partition_key) != (flow, partition_key):
                raise ValueError(f"order intent {i.client_order_id!r} is for {i.flow} {i.partition_key}, "
                                 f"not the plan's tick {flow} {partition_key}")
        token, now = uuid.uuid4().hex, now_iso()
        children = [intent_item(i, pos, token, now) for pos, i in enumerate(intents)]  # validates first
        key = _plan_key(flow, partition_key)
        header = {**key, "flow": _s(flow), "partition_key": _s(partition_key), "count": number(len(ids), "count"),
                  "cids": {"L": [_s(c) for c in ids]}, "created_at": _s(now)}

        def describe(child: Item) -> str:
            return (f"order intent {child['client_order_id']['S']!r} is already in the ledger for another "
                    f"tick or plan; not planning {flow} {partition_key}")

        return self._commit_group(key, header, self.orders_table, "pk", "plan_token", children, token, describe)

    def has_plan(self, flow: str, partition_key: str) -> bool:
        return self._plan(flow, partition_key) is not None

    def _plan(self, flow: str, partition_key: str) -> Item | None:
        return self._header("plan", flow_tick(flow, partition_key), _plan_key(flow, partition_key))

    def latest_plan_key(self, flow: str) -> str | None:
        for item in self._query(
                self.orders_table, KeyConditionExpression="pk = :pk", FilterExpression="#state = :committed",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":pk": _s(f"plan#{flow}"), ":committed": _s(COMMITTED)},
                ProjectionExpression="sk", ScanIndexForward=False, ConsistentRead=True, Limit=25):
            return item["sk"]["S"]
        return None

    def _tick_intents(self, flow: str, partition_key: str) -> list[OrderIntent]:
        plan = self._plan(flow, partition_key)
        if plan is None:
            return []
        token = plan["token"]["S"]
        cids = [v["S"] for v in plan["cids"]["L"]]
        if not cids:
            return []
        found = {i["client_order_id"]["S"]: i for i in self._query(
            self.orders_table, IndexName="by_tick", KeyConditionExpression="gsi1pk = :t",
            ExpressionAttributeValues={":t": _s(flow_tick(flow, partition_key))})
            if i["plan_token"]["S"] == token}
        missing = [c for c in cids if c not in found]
        if missing:  # the index is behind the table (eventual consistency): read those by key
            for i in self._batch_get(self.orders_table, [_intent_key(c) for c in missing]):
                if i["plan_token"]["S"] == token:
                    found[i["client_order_id"]["S"]] = i
        return [intent_from_item(found[c]) for c in cids if c in found]

    def intents(self, flow: str, partition_key: str | None = None, open_only: bool = False) -> list[OrderIntent]:
        if partition_key is not None:
            found = self._tick_intents(flow, partition_key)
            return [i for i in found if i.status.value not in _FINAL] if open_only else found
        if not open_only:
            ticks = [item["sk"]["S"] for item in self._query(
                self.orders_table, KeyConditionExpression="pk = :pk", FilterExpression="#state = :committed",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":pk": _s(f"plan#{flow}"), ":committed": _s(COMMITTED)},
                ProjectionExpression="sk", ConsistentRead=True)]
            return [i for tick in ticks for i in self._tick_intents(flow, tick)]
        items = list(self._query(self.orders_table, IndexName="open_by_flow", KeyConditionExpression="gsi2pk = :f",
                                 ExpressionAttributeValues={":f": _s(flow)}))
        tokens = {tick: self._plan(flow, tick) for tick in sorted({i["partition_key"]["S"] for i in items})}
        visible = [i for i in items if (plan := tokens[i["partition_key"]["S"]]) is not None
                   and plan["token"]["S"] == i["plan_token"]["S"] and i["status"]["S"] not in _FINAL]
        return [intent_from_item(i) for i in sorted(visible, key=lambda i: i["gsi2sk"]["S"])]

    def update_intent(self, client_order_id: str, **fields: object) -> None:
        unknown = set(fields) - INTENT_FIELDS
        if unknown:
            raise ValueError(f"cannot update intent fields {sorted(unknown)}")
        what = f"order intent {client_order_id!r}"
        names = {"#updated_at": "updated_at"}
        values: dict[str, Any] = {":updated_at": _s(now_iso())}
        sets, removes = ["#updated_at = :updated_at"], []
        for name, value in fields.items():
            if name == "status":
                encoded: dict[str, Any] = _s(IntentStatus(value).value)
            elif name == "extra":
                encoded = _s(json.dumps(value))
            elif name in ("qty", "filled_qty"):
                encoded = number(value, f"{what} {name}")
            elif name == "filled_avg_price":
                encoded = _opt_number(value, f"{what} {name}")
            else:
                encoded = _opt_s(value)
            names[f"#{name}"] = name
            values[f":{name}"] = encoded
            sets.append(f"#{name} = :{name}")
        if "status" in fields:
            if IntentStatus(fields["status"]).value in _FINAL:
                removes = ["gsi2pk", "gsi2sk"]  # the sparse open_by_flow index holds open intents only
            else:
                names["#flow"] = "flow"
                sets += ["gsi2pk = #flow", "gsi2sk = open_sk"]
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self._call("update_item", [self.orders_table], TableName=self.orders_table,
                       Key=_intent_key(client_order_id), UpdateExpression=expression,
                       ConditionExpression="attribute_exists(pk)", ExpressionAttributeNames=names,
                       ExpressionAttributeValues=values)
        except botocore.exceptions.ClientError as exc:
            if clients.error_code(exc) == "ConditionalCheckFailedException":
                raise KeyError(f"no order intent {client_order_id!r} in the ledger") from exc
            raise

    def claim_intent(self, client_order_id: str, expected: IntentStatus) -> bool:
        claim = uuid.uuid4().hex
        try:
            self._call("update_item", [self.orders_table], TableName=self.orders_table,
                       Key=_intent_key(client_order_id),
                       UpdateExpression="SET #s = :submitting, updated_at = :now, claim_token = :claim",
                       ConditionExpression="#s = :expected", ExpressionAttributeNames={"#s": "status"},
                       ExpressionAttributeValues={":submitting": _s(IntentStatus.SUBMITTING.value),
                                                  ":expected": _s(IntentStatus(expected).value),
                                                  ":now": _s(now_iso()), ":claim": _s(claim)},
                       ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except botocore.exceptions.ClientError as exc:
            if clients.error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item") or {}
            return _get_s(old, "claim_token") == claim  # True only if it was our own retried write
        return True

    # ------------------------------------------------------------------ transactions
    def record_transaction(self, txn: Transaction) -> bool:
        recorded_at = now_iso()
        item = transaction_item(txn, recorded_at=recorded_at)
        try:
            self._call("put_item", [self.transactions_table], TableName=self.transactions_table, Item=item,
                       ConditionExpression="attribute_not_exists(transaction_id) OR #q <> :q OR #p <> :p "
                                           "OR #c <> :c",
                       ExpressionAttributeNames={"#q": "qty", "#p": "price", "#c": "commission"},
                       ExpressionAttributeValues={":q": item["qty"], ":p": item["price"], ":c": item["commission"]},
                       ReturnValuesOnConditionCheckFailure="ALL_OLD")
        except botocore.exceptions.ClientError as exc:
            if clients.error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item") or {}
            return _get_s(old, "recorded_at") == recorded_at  # our own write, retried after a timeout
        return True

    def _transaction_items(self, account: str | None, flow: str | None,
                           partition_key: str | None) -> list[Item]:
        table = self.transactions_table
        if flow is not None and partition_key is not None:
            items = self._query(table, IndexName="by_tick", KeyConditionExpression="flow_tick = :t",
                                ExpressionAttributeValues={":t": _s(flow_tick(flow, partition_key))})
        elif account is not None:
            items = self._query(table, IndexName="by_account", KeyConditionExpression="account = :a",
                                ExpressionAttributeValues={":a": _s(account)})
        elif flow is not None:
            items = self._query(table, IndexName="by_flow", KeyConditionExpression="flow = :f",
                                ExpressionAttributeValues={":f": _s(flow)})
        elif partition_key is not None:
            raise ValueError("transactions(partition_key=...) needs flow= (or account=): "
                             "a tick is keyed by flow and partition key")
        else:
            items = self._scan(table)
        wanted = {"account": account, "flow": flow, "partition_key": partition_key}
        return self._visible([i for i in items
                              if all(v is None or i[k]["S"] == v for k, v in wanted.items())])

    def _visible(self, items: list[Item]) -> list[Item]:
        """Drop baseline items a run wrote for a baseline it never committed."""
        tokened = {i["account"]["S"] for i in items if "baseline_token" in i}
        if not tokened:
            return items
        tokens = {}
        for account in tokened:
            header = self._header("baseline", account, _baseline_key(account))
            tokens[account] = None if header is None else header["token"]["S"]
        return [i for i in items if "baseline_token" not in i
                or tokens[i["account"]["S"]] == i["baseline_token"]["S"]]

    def transactions(
        self, account: str | None = None, flow: str | None = None, partition_key: str | None = None
    ) -> pd.DataFrame:
        return transactions_frame(self._transaction_items(account, flow, partition_key))

    def net_positions(self, account: str) -> dict[str, float]:
        rows = sorted((transaction_record(i) for i in self._transaction_items(account, None, None)),
                      key=lambda r: (r[10], r[12], r[0]))
        net: dict[str, float] = {}
        for r in rows:
            net[r[4]] = net.get(r[4], 0.0) + (r[6] if r[5] == Side.BUY.value else -r[6])
        return {s: q for s, q in sorted(net.items()) if abs(q) > 1e-9}

    def has_baseline(self, account: str) -> bool:
        return self._header("baseline", account, _baseline_key(account)) is not None

    def record_baseline(self, account: str, opening: Sequence[Transaction]) -> bool:
        opening = list(opening)
        token, now = uuid.uuid4().hex, now_iso()
        children = [transaction_item(t, recorded_at=now, baseline_token=token) for t in opening]
        ids = [t.transaction_id for t in opening]
        if len(set(ids)) != len(ids):
            raise ValueError(f"baseline of {account} lists transaction ids twice")
        key = _baseline_key(account)
        header = {**key, "account": _s(account), "count": number(len(ids), "count"), "created_at": _s(now)}

        def describe(child: Item) -> str:
            return (f"transaction {child['transaction_id']['S']!r} is already in the ledger; "
                    f"not recording the baseline of {account}")

        return self._commit_group(key, header, self.transactions_table, "transaction_id", "baseline_token",
                                  children, token, describe)

    # ------------------------------------------------------------------ equity
    def record_equity(self, snapshot: EquitySnapshot) -> None:
        self._call("put_item", [self.equity_table], TableName=self.equity_table,
                   Item=equity_item(snapshot, recorded_at=now_iso()))

    def equity_curve(self, flow: str) -> pd.DataFrame:
        return equity_frame(self._query(self.equity_table, KeyConditionExpression="flow = :f",
                                        ExpressionAttributeValues={":f": _s(flow)}, ConsistentRead=True))


# ============================================================================ bootstrap


def ensure_tables(region: str, transactions_table: str, equity_table: str, orders_table: str, *,
                  timeout_seconds: float = 300.0, client: Any = None) -> list[str]:
    """Create the ledger's tables (schema.table_specs) where missing, wait until they and
    their indexes are ACTIVE, and return the names this call created. Idempotent; a table
    that exists with other keys or indexes is an AwsSetupError."""
    ddb = client if client is not None else clients.client("dynamodb", region)
    specs = table_specs(transactions_table, equity_table, orders_table)
    created = []

    def call(op: str, name: str, **kwargs: Any) -> Any:
        try:
            return getattr(ddb, op)(**kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            if op == "describe_table" and clients.error_code(exc) == "ResourceNotFoundException":
                return None
            if op == "create_table" and clients.error_code(exc) == "ResourceInUseException":
                return "exists"  # created meanwhile by another bootstrap
            setup = clients.explain(exc, f"DynamoDB table {name}")
            if setup is not None:
                raise setup from exc
            raise

    for name, spec in specs.items():
        if call("describe_table", name, TableName=name) is None and call(
                "create_table", name, **spec) != "exists":
            created.append(name)
    deadline = time.monotonic() + timeout_seconds
    for name, spec in specs.items():
        delay = 0.2
        while True:
            table = call("describe_table", name, TableName=name)["Table"]
            _check_shape(name, spec, table)
            indexes = table.get("GlobalSecondaryIndexes", [])
            if table["TableStatus"] == "ACTIVE" and all(g.get("IndexStatus") == "ACTIVE" for g in indexes):
                break
            if time.monotonic() > deadline:
                raise clients.AwsSetupError(f"DynamoDB table {name} is not ACTIVE after {timeout_seconds:.0f} s "
                                            f"(status {table['TableStatus']})")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    return created


def _check_shape(name: str, spec: dict[str, Any], table: dict[str, Any]) -> None:
    def keys(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
        return [(k["AttributeName"], k["KeyType"]) for k in schema]

    want = (keys(spec["KeySchema"]),
            {g["IndexName"]: keys(g["KeySchema"]) for g in spec.get("GlobalSecondaryIndexes", [])})
    have = (keys(table["KeySchema"]),
            {g["IndexName"]: keys(g["KeySchema"]) for g in table.get("GlobalSecondaryIndexes", [])})
    if want != have:
        raise clients.AwsSetupError(
            f"DynamoDB table {name} exists with another shape (keys/indexes {have}, expected {want}): "
            f"it is not this ledger's table; delete it or choose another TRADING_DDB_TABLE_PREFIX")
