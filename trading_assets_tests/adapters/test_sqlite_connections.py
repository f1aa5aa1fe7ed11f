"""The project's SQLite files are opened once per thread and file (adapters/sqlite/util.py):
the kept connection must behave exactly like a fresh one would."""

import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest

from trading_assets.adapters.sqlite.util import KEPT_PER_THREAD, reading, transaction


def _count(path) -> int:
    with reading(path) as conn:
        return conn.execute("SELECT count(*) FROM t").fetchone()[0]


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "x.sqlite"
    with transaction(path) as conn:
        conn.execute("CREATE TABLE t (a INTEGER)")
    return path


def test_a_failed_transaction_is_rolled_back_and_the_connection_still_works(db):
    with pytest.raises(RuntimeError), transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")
    assert _count(db) == 0
    with transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES (2)")
    assert _count(db) == 1


def test_a_read_inside_a_transaction_sees_committed_rows_and_leaves_the_transaction_alone(db):
    with transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        assert _count(db) == 0  # another connection: the insert is not committed yet
    assert _count(db) == 1  # and the read did not roll the outer transaction back


def test_a_file_deleted_or_replaced_meanwhile_is_opened_again(db, tmp_path):
    with transaction(db) as conn:
        conn.execute("INSERT INTO t VALUES (1)")
    assert _count(db) == 1
    other = tmp_path / "other.sqlite"
    backup = sqlite3.connect(other)
    backup.execute("CREATE TABLE t (a INTEGER)")
    backup.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
    backup.commit()
    backup.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{db}{suffix}"):
            os.remove(f"{db}{suffix}")
    shutil.copy(other, db)  # a restored backup: a new file under the same name
    assert _count(db) == 5


def test_another_thread_commits_are_seen_and_few_connections_stay_open(tmp_path, db):
    def insert():
        with transaction(db) as conn:
            conn.execute("INSERT INTO t VALUES (1)")

    threads = [threading.Thread(target=insert) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _count(db) == 4
    before = len(os.listdir("/proc/self/fd"))
    for i in range(3 * KEPT_PER_THREAD):  # many files, one thread: the oldest are closed
        with transaction(tmp_path / f"f{i}.sqlite") as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS t (a INTEGER)")
    assert len(os.listdir("/proc/self/fd")) - before <= 3 * KEPT_PER_THREAD  # WAL + shm + db per kept file


def test_a_forked_child_opens_its_own_connection(db):
    _count(db)  # the parent keeps one
    pid = os.fork()
    if pid == 0:
        try:
            with transaction(db) as conn:
                conn.execute("INSERT INTO t VALUES (7)")
            os._exit(0 if _count(db) == 1 else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _count(db) == 1


def test_a_process_that_ends_leaves_its_files_checkpointed(tmp_path):
    """Kept connections are closed at exit, so the file alone (what a user copies) holds
    every committed row, as it did when each call closed its connection."""
    path = tmp_path / "ledger.sqlite"
    code = (f"from trading_assets.adapters.sqlite.util import transaction\n"
            f"with transaction({str(path)!r}) as c:\n"
            f"    c.execute('CREATE TABLE t (a INTEGER)')\n"
            f"    c.execute('INSERT INTO t VALUES (1)')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not os.path.exists(f"{path}-wal") or os.path.getsize(f"{path}-wal") == 0
    copy = tmp_path / "copy.sqlite"
    shutil.copy(path, copy)
    assert sqlite3.connect(copy).execute("SELECT count(*) FROM t").fetchone()[0] == 1
