"""Durable per-symbol state for alert-driven flows (what Redis held in the seed), with
optimistic concurrency, and the transition each alert caused, recorded once.

An alert's processing reads the symbol's state and its version, applies the alert (a
pure function in the flow's strategy module), and commits the new state *and* the
alert's transition in one atomic write that succeeds only if the version is unchanged.
A lost race reloads and re-applies. A crash after the commit and before the orders is
recovered by the rerun, which finds the alert's recorded transition (and its actions)
instead of re-applying the alert to a state that already contains it.

SQLite locally; a DynamoDB conditional write (version check) in aws mode.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class StoredState:
    """A symbol's state as stored: `state` None and `version` 0 when never written."""

    flow: str
    symbol: str
    state: Mapping[str, Any] | None
    version: int = 0


@dataclass(frozen=True)
class RecordedTransition:
    """What one alert did to its symbol's state (recorded once per (flow, alert id))."""

    flow: str
    alert_id: str
    symbol: str
    outcome: str  # applied | ignored | rejected
    reason: str
    actions: tuple[str, ...]
    state_before: Mapping[str, Any] | None
    state_after: Mapping[str, Any]
    version_after: int
    recorded_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)  # e.g. the broker instrument, the event time

    def __post_init__(self) -> None:
        object.__setattr__(self, "actions", tuple(self.actions))
        if self.recorded_at.tzinfo is None:
            raise ValueError("RecordedTransition.recorded_at must be timezone-aware")


@runtime_checkable
class SymbolStateStore(Protocol):
    """Every implementation passes the same contract suite (SQLite, DynamoDB)."""

    def load(self, flow: str, symbol: str) -> StoredState:
        """The symbol's current state and version (a consistent read)."""
        ...

    def transition_for(self, flow: str, alert_id: str) -> RecordedTransition | None:
        """The transition recorded for this alert, if any (a consistent read)."""
        ...

    def commit(self, expected_version: int, transition: RecordedTransition) -> bool:
        """Atomically store `transition.state_after` as the symbol's state at version
        `expected_version + 1` (== `transition.version_after`) and record the transition
        under its alert id. False, and nothing written, if the symbol's version is no
        longer `expected_version` (another writer won: reload and re-apply) or the alert
        already has a transition (use `transition_for`).

        The retry rule: True also when the alert's recorded transition is *identical* to
        `transition` (every field equal as stored: `version_after` and the instant
        `recorded_at` included; mappings compared as JSON values): that is this same
        commit, already landed (a write resent by the AWS client after a lost answer, or a
        caller retrying a call whose answer it lost). A different transition for an alert
        that has one (e.g. re-applied with a new `recorded_at`) is False.
        ValueError, before anything is written, if `transition.version_after` is not
        `expected_version + 1` or a mapping is not plain JSON (NaN/inf refused)."""
        ...

    def history(self, flow: str, symbol: str, limit: int = 50) -> Sequence[RecordedTransition]:
        """The symbol's recorded transitions in this flow, newest (highest
        `version_after`) first, at most `limit` (none when `limit` <= 0)."""
        ...
