"""The embedded ledger: order intents, transactions and equity snapshots in SQLite.

Tables mirror the DynamoDB items the AWS ledger stores (TransactionTable keyed by
`transaction_id`, EquityTable keyed by (flow, partition_key)), so the two are
interchangeable behind `core.ports.Ledger`. Every write is keyed and idempotent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from trading_assets.adapters.sqlite.util import ensure_schema, reading, transaction
from trading_assets.core.ports import OPEN_INTENT_STATUSES, EquitySnapshot, IntentStatus, OrderIntent, Side, Transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    flow TEXT NOT NULL, partition_key TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (flow, partition_key));
CREATE TABLE IF NOT EXISTS order_intents (
    client_order_id TEXT PRIMARY KEY, flow TEXT NOT NULL, partition_key TEXT NOT NULL,
    account TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL,
    leg TEXT NOT NULL, reference_price REAL, order_type TEXT NOT NULL, status TEXT NOT NULL,
    broker_order_id TEXT, filled_qty REAL NOT NULL DEFAULT 0, filled_avg_price REAL,
    reason TEXT, extra TEXT NOT NULL DEFAULT '{}', created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS order_intents_flow ON order_intents (flow, partition_key);
CREATE TABLE IF NOT EXISTS transactions (
    transaction_id TEXT PRIMARY KEY, account TEXT NOT NULL, flow TEXT NOT NULL,
    partition_key TEXT NOT NULL, symbol TEXT NOT NULL, side TEXT NOT NULL, qty REAL NOT NULL,
    price REAL NOT NULL, commission REAL NOT NULL, kind TEXT NOT NULL,
    executed_at TEXT NOT NULL, client_order_id TEXT, recorded_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS baselines (account TEXT PRIMARY KEY, captured_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS equity (
    flow TEXT NOT NULL, partition_key TEXT NOT NULL, account TEXT NOT NULL, as_of TEXT NOT NULL,
    cash REAL NOT NULL, equity REAL NOT NULL, buying_power REAL NOT NULL,
    positions TEXT NOT NULL, recorded_at TEXT NOT NULL, PRIMARY KEY (flow, partition_key));
"""

OPEN_STATUSES = tuple(sorted(s.value for s in OPEN_INTENT_STATUSES))
_INTENT_FIELDS = {
    "status", "broker_order_id", "filled_qty", "filled_avg_price", "reason", "qty", "extra",
}


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SqliteLedger:
    """`core.ports.Ledger` over one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        ensure_schema(self.path, _SCHEMA)

    # ------------------------------------------------------------------ plans and intents
    def record_plan(self, flow: str, partition_key: str, intents: Sequence[OrderIntent]) -> bool:
        now = _now()
        with transaction(self.path) as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO plans (flow, partition_key, created_at) VALUES (?, ?, ?)",
                (flow, partition_key, now),
            )
            if cur.rowcount == 0:
                return False
            conn.executemany(
                "INSERT INTO order_intents (client_order_id, flow, partition_key, account, symbol,"
                " side, qty, leg, reference_price, order_type, status, broker_order_id, filled_qty,"
                " filled_avg_price, reason, extra, created_at, updated_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (i.client_order_id, i.flow, i.partition_key, i.account, i.symbol, i.side.value,
                     i.qty, i.leg, i.reference_price, i.order_type, i.status, i.broker_order_id,
                     i.filled_qty, i.filled_avg_price, i.reason, json.dumps(i.extra), now, now)
                    for i in intents
                ],
            )
        return True

    def has_plan(self, flow: str, partition_key: str) -> bool:
        with reading(self.path) as conn:
            row = conn.execute(
                "SELECT 1 FROM plans WHERE flow = ? AND partition_key = ?", (flow, partition_key)
            ).fetchone()
        return row is not None

    def latest_plan_key(self, flow: str) -> str | None:
        with reading(self.path) as conn:
            row = conn.execute("SELECT MAX(partition_key) FROM plans WHERE flow = ?", (flow,)).fetchone()
        return row[0]

    def intents(self, flow: str, partition_key: str | None = None, open_only: bool = False) -> list[OrderIntent]:
        sql = "SELECT * FROM order_intents WHERE flow = ?"
        args: list[object] = [flow]
        if partition_key is not None:
            sql += " AND partition_key = ?"
            args.append(partition_key)
        if open_only:
            sql += f" AND status IN ({','.join('?' * len(OPEN_STATUSES))})"
            args.extend(OPEN_STATUSES)
        sql += " ORDER BY partition_key, rowid"
        with reading(self.path) as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_intent_from_row(r) for r in rows]

    def update_intent(self, client_order_id: str, **fields: object) -> None:
        unknown = set(fields) - _INTENT_FIELDS
        if unknown:
            raise ValueError(f"cannot update intent fields {sorted(unknown)}")
        if "extra" in fields:
            fields["extra"] = json.dumps(fields["extra"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        with transaction(self.path) as conn:
            cur = conn.execute(
                f"UPDATE order_intents SET {sets}, updated_at = ? WHERE client_order_id = ?",
                [*fields.values(), _now(), client_order_id],
            )
            if cur.rowcount != 1:
                raise KeyError(f"no order intent {client_order_id!r} in the ledger")

    def claim_intent(self, client_order_id: str, expected: IntentStatus) -> bool:
        with transaction(self.path) as conn:
            cur = conn.execute(
                "UPDATE order_intents SET status = ?, updated_at = ? WHERE client_order_id = ? AND status = ?",
                (IntentStatus.SUBMITTING.value, _now(), client_order_id, IntentStatus(expected).value),
            )
        return cur.rowcount == 1

    # ------------------------------------------------------------------ transactions
    def record_transaction(self, txn: Transaction) -> bool:
        row = (txn.transaction_id, txn.account, txn.flow, txn.partition_key, txn.symbol,
               txn.side.value, txn.qty, txn.price, txn.commission, txn.kind,
               txn.executed_at.isoformat(), txn.client_order_id, _now())
        with transaction(self.path) as conn:
            old = conn.execute(
                "SELECT qty, price, commission FROM transactions WHERE transaction_id = ?",
                (txn.transaction_id,),
            ).fetchone()
            unchanged = old is not None and (old["qty"], old["price"], old["commission"]) == (
                txn.qty, txn.price, txn.commission)
            if unchanged:
                return False
            conn.execute("INSERT OR REPLACE INTO transactions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", row)
        return True

    def transactions(
        self, account: str | None = None, flow: str | None = None, partition_key: str | None = None
    ) -> pd.DataFrame:
        sql, args = "SELECT * FROM transactions WHERE 1=1", []
        for column, value in (("account", account), ("flow", flow), ("partition_key", partition_key)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with reading(self.path) as conn:
            frame = pd.read_sql_query(sql + " ORDER BY executed_at, rowid", conn, params=args)
        frame["executed_at"] = pd.to_datetime(frame["executed_at"], utc=True, format="ISO8601")
        return frame

    def net_positions(self, account: str) -> dict[str, float]:
        with reading(self.path) as conn:
            rows = conn.execute(
                "SELECT symbol, SUM(CASE side WHEN 'buy' THEN qty ELSE -qty END) AS net"
                " FROM transactions WHERE account = ? GROUP BY symbol ORDER BY symbol",
                (account,),
            ).fetchall()
        return {r["symbol"]: r["net"] for r in rows if abs(r["net"]) > 1e-9}

    def has_baseline(self, account: str) -> bool:
        with reading(self.path) as conn:
            row = conn.execute("SELECT 1 FROM baselines WHERE account = ?", (account,)).fetchone()
        return row is not None

    def record_baseline(self, account: str, opening: Sequence[Transaction]) -> bool:
        with transaction(self.path) as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO baselines (account, captured_at) VALUES (?, ?)", (account, _now())
            )
            if cur.rowcount == 0:
                return False
            conn.executemany(
                "INSERT OR IGNORE INTO transactions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [(t.transaction_id, t.account, t.flow, t.partition_key, t.symbol, t.side.value, t.qty,
                  t.price, t.commission, t.kind, t.executed_at.isoformat(), t.client_order_id, _now())
                 for t in opening],
            )
        return True

    # ------------------------------------------------------------------ equity
    def record_equity(self, snapshot: EquitySnapshot) -> None:
        with transaction(self.path) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO equity VALUES (?,?,?,?,?,?,?,?,?)",
                (snapshot.flow, snapshot.partition_key, snapshot.account, snapshot.as_of.isoformat(),
                 snapshot.cash, snapshot.equity, snapshot.buying_power,
                 json.dumps(dict(snapshot.positions), sort_keys=True), _now()),
            )

    def equity_curve(self, flow: str) -> pd.DataFrame:
        with reading(self.path) as conn:
            frame = pd.read_sql_query(
                "SELECT partition_key, as_of, account, cash, equity, buying_power, positions"
                " FROM equity WHERE flow = ? ORDER BY as_of", conn, params=[flow])
        frame["as_of"] = pd.to_datetime(frame["as_of"], utc=True, format="ISO8601")
        return frame


def _intent_from_row(row) -> OrderIntent:
    return OrderIntent(
        client_order_id=row["client_order_id"], flow=row["flow"], partition_key=row["partition_key"],
        account=row["account"], symbol=row["symbol"], side=Side(row["side"]), qty=row["qty"],
        leg=row["leg"], reference_price=row["reference_price"], order_type=row["order_type"],
        status=IntentStatus(row["status"]), broker_order_id=row["broker_order_id"], filled_qty=row["filled_qty"],
        filled_avg_price=row["filled_avg_price"], reason=row["reason"], extra=json.loads(row["extra"]),
    )
