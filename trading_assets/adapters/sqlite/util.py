"""One way to open the project's SQLite files: WAL, a busy timeout, and short
transactions, so two overlapping runs (a rerun while a schedule tick runs) serialise
instead of failing or corrupting the file.

Connections are kept open per thread and file (a few per thread, the least recently used
closed first): adapters are built afresh in every asset and open the file for each call,
and opening, then closing the last connection (which checkpoints the WAL) cost ~1.2 ms a
write; a kept connection ~0.3 ms. A file deleted or replaced meanwhile gets a new one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_SECONDS = 30.0


def connect(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(p, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    conn.row_factory = sqlite3.Row
    _set_wal(conn)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _set_wal(conn: sqlite3.Connection) -> None:
    """`journal_mode=WAL`, retried while busy: SQLite answers SQLITE_BUSY to it without
    calling the busy handler while another process opens or recovers the WAL (seen with
    two alert workers: "database is locked" at once, not after the 30 s timeout)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)


KEPT_PER_THREAD = 8
_kept = threading.local()


class _Pool(OrderedDict):
    """One thread's kept connections, path -> (connection, inode); freed with its thread."""

    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()

    __hash__ = object.__hash__  # by identity, for the WeakSet below


_all_pools: weakref.WeakSet[_Pool] = weakref.WeakSet()


@atexit.register
def _close_kept() -> None:
    """Close what is kept at exit: the last close checkpoints the WAL into the file, so
    the file alone (what a user copies) has every committed row. Never a parent's
    connections in a forked child."""
    for pool in list(_all_pools):
        if pool.pid != os.getpid():
            continue
        for conn, _ in list(pool.values()):
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        pool.clear()


def _pool() -> _Pool:
    if getattr(_kept, "pid", None) != os.getpid():  # a forked child never shares its parent's
        _kept.pool, _kept.busy, _kept.pid = _Pool(), set(), os.getpid()
        _all_pools.add(_kept.pool)
    return _kept.pool


@contextmanager
def _connection(path: str | Path) -> Iterator[sqlite3.Connection]:
    """This thread's kept connection to `path`; a fresh one (closed after) when the kept
    one is already in use further up the stack (a read inside a transaction)."""
    pool, key = _pool(), os.path.abspath(path)
    if key in _kept.busy:
        conn = connect(key)
        try:
            yield conn
        finally:
            conn.close()
        return
    try:
        inode = os.stat(key).st_ino
    except FileNotFoundError:
        inode = -1
    kept = pool.pop(key, None)
    if kept is not None and kept[1] != inode:  # deleted or replaced under us
        kept[0].close()
        kept = None
    if kept is None:
        conn = connect(key)
        kept = (conn, os.stat(key).st_ino)
    pool[key] = kept
    while len(pool) > KEPT_PER_THREAD:
        pool.popitem(last=False)[1][0].close()
    conn = kept[0]
    _kept.busy.add(key)
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:  # ROLLBACK or COMMIT itself failed: never reuse it half-done
            pool.pop(key, None)
            conn.close()
        raise
    finally:
        _kept.busy.discard(key)


@contextmanager
def transaction(path: str | Path, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
    """An IMMEDIATE (write-locking) transaction: read-check-write sequences inside it
    are atomic with respect to other processes. `durable`: synchronous=FULL, so the
    commit is on disk when it returns (what an "accepted" answer may rely on)."""
    with _connection(path) as conn:
        if durable:
            conn.execute("PRAGMA synchronous=FULL")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            if durable and not conn.in_transaction:
                conn.execute("PRAGMA synchronous=NORMAL")


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
    with _connection(path) as conn:
        yield conn
