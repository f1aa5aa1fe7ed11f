"""The embedded per-symbol state store: `core.symbol_state.SymbolStateStore` over SQLite.

Two tables, mirroring the DynamoDB store's items:

- `symbol_states`: one row per (flow, symbol): the state (canonical JSON), its version
  (a missing row is version 0) and the alert that wrote it.
- `symbol_transitions`: one row per (flow, alert id): what the alert did, with the
  version it produced; unique per (flow, symbol, version_after), which is also the
  history's order (newest = highest version).

`commit` is one IMMEDIATE transaction (a write lock on the file, so it is atomic across
threads and processes): the alert's recorded transition is looked up, then the version
checked, then the state upserted at version + 1 and the transition inserted.

The retry rule (the DynamoDB store's, where botocore resends a write whose answer was
lost): `commit` is True when it wrote, and also when the alert's recorded transition is
*identical* to the one passed (every field, `recorded_at` included, compared in their
stored encoding): that is this same commit, already landed. Any other transition for an
alert that already has one is False.

JSON mappings are stored as canonical JSON (sorted keys; NaN/inf refused), timestamps as
ISO-8601 UTC; `recorded_at` comes back timezone-aware in UTC.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trading_assets.adapters.sqlite.util import ensure_schema, reading, transaction
from trading_assets.core.symbol_state import RecordedTransition, StoredState

_SCHEMA = """
CREATE TABLE IF NOT EXISTS symbol_states (
    flow TEXT NOT NULL, symbol TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL,
    alert_id TEXT NOT NULL, updated_at TEXT NOT NULL, PRIMARY KEY (flow, symbol));
CREATE TABLE IF NOT EXISTS symbol_transitions (
    flow TEXT NOT NULL, alert_id TEXT NOT NULL, symbol TEXT NOT NULL, outcome TEXT NOT NULL,
    reason TEXT NOT NULL, actions TEXT NOT NULL, state_before TEXT, state_after TEXT NOT NULL,
    version_after INTEGER NOT NULL, recorded_at TEXT NOT NULL, details TEXT NOT NULL,
    PRIMARY KEY (flow, alert_id), UNIQUE (flow, symbol, version_after));
"""

_COLUMNS = ("flow", "alert_id", "symbol", "outcome", "reason", "actions", "state_before", "state_after",
            "version_after", "recorded_at", "details")


def canonical_json(value: Any, what: str) -> str:
    """Sorted keys, no whitespace, finite numbers only: equal values give equal strings."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not plain JSON: {exc}") from exc


def check_commit(expected_version: int, transition: RecordedTransition) -> None:
    """The arguments every store refuses before writing anything."""
    if isinstance(expected_version, bool) or not isinstance(expected_version, int) or expected_version < 0:
        raise ValueError(f"expected_version must be an int >= 0, got {expected_version!r}")
    if transition.version_after != expected_version + 1:
        raise ValueError(f"transition of alert {transition.alert_id!r} has version_after "
                         f"{transition.version_after!r}, expected {expected_version + 1} "
                         f"(expected_version {expected_version} + 1)")
    if not isinstance(transition.state_after, Mapping):
        raise ValueError(f"transition of alert {transition.alert_id!r}: state_after must be a mapping")


def _row(t: RecordedTransition) -> tuple[Any, ...]:
    what = f"transition of alert {t.alert_id!r}"
    return (t.flow, t.alert_id, t.symbol, t.outcome, t.reason,
            canonical_json(list(t.actions), f"{what} actions"),
            None if t.state_before is None else canonical_json(dict(t.state_before), f"{what} state_before"),
            canonical_json(dict(t.state_after), f"{what} state_after"),
            int(t.version_after), t.recorded_at.astimezone(UTC).isoformat(),
            canonical_json(dict(t.details), f"{what} details"))


def _transition(row: Any) -> RecordedTransition:
    return RecordedTransition(
        flow=row["flow"], alert_id=row["alert_id"], symbol=row["symbol"], outcome=row["outcome"],
        reason=row["reason"], actions=tuple(json.loads(row["actions"])),
        state_before=None if row["state_before"] is None else json.loads(row["state_before"]),
        state_after=json.loads(row["state_after"]), version_after=int(row["version_after"]),
        recorded_at=datetime.fromisoformat(row["recorded_at"]), details=json.loads(row["details"]),
    )


class SqliteSymbolStateStore:
    """`core.symbol_state.SymbolStateStore` over one SQLite file (it may be the ledger's)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        ensure_schema(self.path, _SCHEMA)

    def load(self, flow: str, symbol: str) -> StoredState:
        with reading(self.path) as conn:
            row = conn.execute("SELECT state, version FROM symbol_states WHERE flow = ? AND symbol = ?",
                               (flow, symbol)).fetchone()
        if row is None:
            return StoredState(flow, symbol, None, 0)
        return StoredState(flow, symbol, json.loads(row["state"]), int(row["version"]))

    def transition_for(self, flow: str, alert_id: str) -> RecordedTransition | None:
        with reading(self.path) as conn:
            row = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM symbol_transitions"
                               " WHERE flow = ? AND alert_id = ?", (flow, alert_id)).fetchone()
        return None if row is None else _transition(row)

    def commit(self, expected_version: int, transition: RecordedTransition) -> bool:
        check_commit(expected_version, transition)
        row = _row(transition)
        t = transition
        with transaction(self.path) as conn:
            old = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM symbol_transitions"
                               " WHERE flow = ? AND alert_id = ?", (t.flow, t.alert_id)).fetchone()
            if old is not None:
                return tuple(old) == row  # this very commit, already recorded (the retry rule)
            current = conn.execute("SELECT version FROM symbol_states WHERE flow = ? AND symbol = ?",
                                   (t.flow, t.symbol)).fetchone()
            if (0 if current is None else int(current["version"])) != expected_version:
                return False  # another writer won: reload and re-apply
            conn.execute(
                "INSERT INTO symbol_states (flow, symbol, state, version, alert_id, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (flow, symbol) DO UPDATE SET state = excluded.state,"
                " version = excluded.version, alert_id = excluded.alert_id, updated_at = excluded.updated_at",
                (t.flow, t.symbol, row[7], t.version_after, t.alert_id, datetime.now(UTC).isoformat()))
            conn.execute(f"INSERT INTO symbol_transitions ({', '.join(_COLUMNS)})"
                         f" VALUES ({', '.join('?' * len(_COLUMNS))})", row)
        return True

    def history(self, flow: str, symbol: str, limit: int = 50) -> Sequence[RecordedTransition]:
        if limit <= 0:
            return []
        with reading(self.path) as conn:
            rows = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM symbol_transitions"
                                " WHERE flow = ? AND symbol = ? ORDER BY version_after DESC LIMIT ?",
                                (flow, symbol, limit)).fetchall()
        return [_transition(r) for r in rows]
