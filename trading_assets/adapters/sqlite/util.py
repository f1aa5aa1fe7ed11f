"""One way to open the project's SQLite files: WAL, a busy timeout, and short
transactions, so two overlapping runs (a rerun while a schedule tick runs) serialise
instead of failing or corrupting the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def connect(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(p, timeout=30.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


@contextmanager
def transaction(path: str | Path, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
    """An IMMEDIATE (write-locking) transaction: read-check-write sequences inside it
    are atomic with respect to other processes. `durable`: synchronous=FULL, so the
    commit is on disk when it returns (what an "accepted" answer may rely on)."""
    conn = connect(path)
    try:
        if durable:
            conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


_READY: set[tuple[str, str]] = set()


def ensure_schema(path: str | Path, schema: str) -> None:
    """Create the tables in `schema` (statements separated by `;`), once per process and
    file: adapters are built afresh in every asset, so this keeps a write transaction off
    each of them. A file deleted meanwhile is created again."""
    p = Path(path).resolve()
    key = (str(p), schema)
    if key in _READY and p.exists():
        return
    with transaction(p) as conn:
        for statement in filter(str.strip, schema.split(";")):
            conn.execute(statement)
    _READY.add(key)


@contextmanager
def reading(path: str | Path) -> Iterator[sqlite3.Connection]:
    conn = connect(path)
    try:
        yield conn
    finally:
        conn.close()
