"""Journal faults degrade, they do not kill: corruption, a damaged WAL, a full disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_process import DaemonProcess, spoken_log

from ishowttsd.journal import Journal
from ishowttsd.messages import Kind, Message, Priority, User, Utterance


def paid(i: int) -> Utterance:
    m = Message(platform="bilibili", kind=Kind.SUPERCHAT, text=f"sc {i}", user=User(id=str(i), name=f"u{i}"),
                amount=30, currency="CNY", id=f"sc-{i}")  # fmt: skip
    return Utterance(text=f"醒目留言 {i}", priority=Priority.PAID, deadline=time.monotonic() + 600, message=m)


def test_a_file_that_is_not_a_database_is_moved_aside_and_a_fresh_one_starts(tmp_path):
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database at all" * 100)
    j = Journal(path)
    j.open()
    try:
        assert j.damage is not None and j.damage.what == "corrupt" and j.damage.salvaged == 0
        aside = Path(j.damage.moved_to)
        assert aside.exists() and aside.read_bytes().startswith(b"this is not") and ".corrupt-" in aside.name
        u = paid(1)
        assert j.add(u) and j.status()["pending"] == 1  # the fresh journal works
    finally:
        j.close()


def test_a_corrupt_index_keeps_what_can_be_read(tmp_path):
    path = tmp_path / "journal.sqlite3"
    j = Journal(path)
    j.open()
    for i in range(300):
        j.add(paid(i))
    j.close()
    db = sqlite3.connect(path)
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'utterances_state'").fetchone()[0]
    page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as f:  # scribble over the index's root page: the table itself is intact
        f.seek((root - 1) * page)
        f.write(b"\xff" * page)
    j = Journal(path)
    j.open()
    try:
        assert j.damage is not None and j.damage.what == "corrupt"
        assert j.damage.salvaged == 300, j.damage
        live, _, _ = j.recover()
        assert sorted(u.message.id for u in live) == sorted(f"sc-{i}" for i in range(300))
    finally:
        j.close()


WRITER = """
import os, sys, time
sys.path.insert(0, {tests!r})
from test_journal_faults import paid
from ishowttsd.journal import Journal
j = Journal(__import__("pathlib").Path({path!r}), synchronous="normal")
j.open()
j._db.execute("PRAGMA wal_autocheckpoint=0")  # keep every write in the WAL, as a crash would leave it
for i in range(12):
    j.add(paid(i))
os._exit(0)  # die without closing: the WAL is not checkpointed
"""


def test_committed_writes_lost_to_a_damaged_wal_are_reported(tmp_path):
    path = tmp_path / "journal.sqlite3"
    code = WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
    wal = Path(str(path) + "-wal")
    data = bytearray(wal.read_bytes())
    page = int.from_bytes(data[8:12], "big")
    frame = 24 + page
    assert (len(data) - 32) // frame >= 12
    # flip bytes inside the 4th frame's page: SQLite stops at it and ignores every later commit
    pos = 32 + 3 * frame + 24 + 100
    data[pos : pos + 8] = bytes(b ^ 0xFF for b in data[pos : pos + 8])
    wal.write_bytes(bytes(data))
    j = Journal(path)
    j.open()
    try:
        assert j.damage is not None and j.damage.what == "wal" and j.damage.lost_transactions >= 8, j.damage
        live, _, _ = j.recover()
        assert len(live) < 12  # lost, and said so
    finally:
        j.close()


def test_the_daemon_starts_on_a_corrupt_journal_and_says_so(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.sqlite3").write_bytes(b"garbage" * 1000)
    config = '[daemon]\nstate_dir = "state"\n[engine]\nwarmup = false\n[[sinks]]\ntype = "file"\ndirectory = "out"\n'
    with DaemonProcess(tmp_path, config) as d:  # before: exit 78 with advice about permissions
        st = d.request("status")
        assert st["journal"]["damage"]["what"] == "corrupt" and st["journal"]["damage"]["moved_to"]
        paid_check = next(c for c in d.request("health")["checks"] if c["check"] == "paid")
        assert paid_check["level"] == "warn" and "damaged" in paid_check["reason"] and ".corrupt-" in paid_check["reason"]
        assert d.request("inject", {"platform": "bilibili", "kind": "superchat", "user": "b", "text": "hi", "amount": 30,
                                    "currency": "CNY", "id": "x1"})["accepted"]  # fmt: skip
        d.wait_for(lambda: d.request("status")["counts"]["spoken"] == 1, what="the super chat")
        assert d.request("status")["journal"]["pending"] == 0


@pytest.fixture
def full_disk(tmp_path):
    """A tiny real filesystem, filled to the brim, when this process may mount one."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()})")
    filler = mnt / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    try:
        yield mnt, filler
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_state_disk_at_start_degrades_and_recovers(tmp_path, full_disk):
    mnt, filler = full_disk
    config = f"""
[daemon]
state_dir = "{mnt / 'state'}"
[engine]
warmup = false
[journal]
retry_owed_s = 0.5
[[sinks]]
type = "file"
directory = "out"
"""
    with DaemonProcess(tmp_path, config) as d:  # before: exit 78
        st = d.request("status")
        assert st["state"] == "running" and st["journal"]["problem"]
        paid_check = next(c for c in d.request("health")["checks"] if c["check"] == "paid")
        assert paid_check["level"] == "fail" and "journal is unavailable" in paid_check["reason"]
        r = d.ctl("health", check=False)
        assert r.returncode == 2 and "paid" in r.stdout
        # speech goes on without it
        d.request("inject", {"platform": "bilibili", "kind": "superchat", "user": "b", "text": "still", "amount": 30,
                             "currency": "CNY", "id": "x2"})  # fmt: skip
        d.wait_for(lambda: len(spoken_log(tmp_path / "out")) == 1, what="speech without a journal")
        filler.unlink()  # space comes back: the journal opens without a restart
        d.wait_for(lambda: d.request("status")["journal"]["problem"] is None, what="the journal to open")
        assert next(c for c in d.request("health")["checks"] if c["check"] == "paid")["level"] == "ok"
        assert (mnt / "state" / "journal.sqlite3").exists()


def test_a_journal_that_fails_at_run_time_fails_health(tmp_path, full_disk):
    mnt, filler = full_disk
    filler.unlink()  # room to start
    config = f"""
[daemon]
state_dir = "{mnt / 'state'}"
[engine]
warmup = false
[[sinks]]
type = "file"
directory = "out"
"""
    with DaemonProcess(tmp_path, config) as d:
        assert next(c for c in d.request("health")["checks"] if c["check"] == "paid")["level"] == "ok"
        d.request("pause")
        try:
            with open(filler, "wb") as f:  # the disk fills up under the running daemon
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        for i in range(5):
            d.request("inject", {"platform": "bilibili", "kind": "superchat", "user": f"b{i}", "text": f"sc {i}",
                                 "amount": 30, "currency": "CNY", "id": f"rt-{i}"})  # fmt: skip
        check = next(c for c in d.request("health")["checks"] if c["check"] == "paid")
        assert check["level"] == "fail" and "journal writes fail" in check["reason"], check
        d.request("resume")  # and speech goes on
        d.wait_for(lambda: d.request("status")["counts"]["spoken"] == 5, what="speech with a failing journal")
