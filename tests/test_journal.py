"""The journal on its own: WAL, what is pending after a crash, stale entries, no double speech."""

from __future__ import annotations

import os
import sqlite3
import time

import pytest

from ishowttsd.config import parse_config
from ishowttsd.journal import Journal, JournalError
from ishowttsd.messages import Kind, Message, Priority, User, Utterance


@pytest.fixture
def opened():
    """Open journals; all closed at teardown (a "crash" in a test is a journal left open meanwhile)."""
    journals = []

    def _open(path, **kw) -> Journal:
        for old in journals:
            if old.path == path:
                # the earlier owner "dies": its lock goes with it, as on SIGKILL; its connection is
                # left open and nothing more is committed through it
                old._release_lock()
        j = Journal(path, **kw)
        j.open()
        journals.append(j)
        return j

    yield _open
    for j in journals:
        j.close()


def paid(text: str, ttl: float = 600.0, prio: Priority = Priority.PAID, mid: str = "") -> Utterance:
    m = Message(platform="bilibili", kind=Kind.SUPERCHAT, text=text, user=User(id="9", name="老板"),
                amount=30, currency="CNY", id=mid, extra={"sc_id": 7})  # fmt: skip
    return Utterance(text=f"老板的醒目留言：{text}", priority=prio, voice="v1", deadline=time.monotonic() + ttl,
                     message=m, source="bili")  # fmt: skip


def test_wal_mode_and_private_file(tmp_path, opened):
    j = opened(tmp_path / "state" / "journal.sqlite3")
    assert j._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (tmp_path / "state" / "journal.sqlite3").stat().st_mode & 0o077 == 0
    j.close()


def test_pending_survives_a_crash_and_comes_back_once(tmp_path, opened):
    path = tmp_path / "j.sqlite3"
    j = opened(path)
    a, b, c, d = paid("一"), paid("二"), paid("三", prio=Priority.MEMBERSHIP), paid("四")
    for u in (a, b, c, d):
        j.add(u)
    j.finish(a, "spoken")
    j.finish(d, "dropped", "removed")
    b.text = "老板的醒目留言：二!"  # e.g. a combo grew
    j.update_text(b)
    # a crash: no close(); another connection (the next daemon) reads what was committed
    j2 = opened(path)
    live, stale, given_up = j2.recover()
    assert [u.text for u in live] == ["老板的醒目留言：二!", "老板的醒目留言：三"]
    assert [u.priority for u in live] == [Priority.PAID, Priority.MEMBERSHIP]
    assert not stale and not given_up
    r = live[0]
    assert r.voice == "v1" and r.source == "bili" and r.message.user.name == "老板" and r.message.extra == {"sc_id": 7}
    assert r.created_wall == pytest.approx(b.created_wall) and 500 < r.deadline - time.monotonic() <= 600
    assert j2.tracks(r)
    j2.finish(r, "spoken")
    j2.finish(live[1], "spoken")
    j2.finish(live[1], "spoken")  # twice is harmless
    j3 = opened(path)
    assert j3.recover() == ([], [], [])
    assert j3.counts() == {"spoken": 3, "dropped": 1}


def test_stale_entries_are_reported_once(tmp_path, opened):
    path = tmp_path / "j.sqlite3"
    j = opened(path)
    j.add(paid("过期", ttl=0.01, mid="sc-1"))
    j.add(paid("还行", ttl=600))
    time.sleep(0.05)
    j2 = opened(path)
    live, stale, _ = j2.recover()
    assert [u.text for u in live] == ["老板的醒目留言：还行"]
    assert [s.text for s in stale] == ["老板的醒目留言：过期"]
    d = stale[0].to_dict()
    assert d["user"] == "老板" and d["message_id"] == "sc-1" and d["late_by_s"] >= 0
    j3 = opened(path)
    live, stale, _ = j3.recover()
    assert not stale and len(live) == 1  # the live one again: it was never finished


def test_crash_loop_is_given_up(tmp_path, opened):
    # a text that crashes the daemon each time it is synthesized: given up after max_attempts
    path = tmp_path / "j.sqlite3"
    j = opened(path, max_attempts=3)
    j.add(paid("毒药"))
    outs = []
    for _ in range(3):
        jj = opened(path, max_attempts=3)
        outs.append(jj.recover())
        for u in outs[-1][0]:
            jj.started(u)  # synthesis began, then the process died
    assert [len(o[0]) for o in outs] == [1, 1, 1]
    final = opened(path, max_attempts=3).recover()
    assert len(final[0]) == 0 and len(final[2]) == 1


def test_restarts_without_an_attempt_never_give_up(tmp_path, opened):
    # restarts while the utterance only waited (say, a crash loop elsewhere) cost it nothing
    path = tmp_path / "j.sqlite3"
    j = opened(path, max_attempts=2)
    j.add(paid("还在排队"))
    for _ in range(5):
        live, _, given_up = opened(path, max_attempts=2).recover()
        assert len(live) == 1 and not given_up


def test_a_write_failure_degrades_instead_of_raising(tmp_path, opened):
    j = opened(tmp_path / "j.sqlite3")
    j._db.close()  # as if the disk went away under us
    import sqlite3

    j._db = sqlite3.connect(":memory:")  # no table: every write now fails
    u = paid("超级留言")
    j.add(u)
    assert j.error and "journal write failed" in j.error
    assert not j.tracks(u) and j.status()["error"] == j.error
    j.finish(u, "spoken")  # nothing raises


def test_recent_message_ids_and_prune(tmp_path, opened):
    j = opened(tmp_path / "j.sqlite3")
    u = paid("a", mid="sc-9")
    j.add(u)
    assert j.recent_message_ids() == [("bilibili", "sc-9")]
    j.finish(u, "spoken")
    assert j.prune(keep_days=1) == 0
    assert j.prune(keep_days=0) == 1


def test_unwritable_state_dir_reads_like_advice(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    j = Journal(blocker / "journal.sqlite3")
    with pytest.raises(JournalError) as e:
        j.open()
    assert "state directory" in str(e.value) and "[journal]" in str(e.value)


def test_state_dir_respects_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert parse_config({}).state_dir() == tmp_path / "xdg" / "ishowtts"


def test_only_paid_and_membership_are_owed():
    assert [p.name for p in Priority if p.owed] == ["PAID", "MEMBERSHIP"]


def test_corrupt_row_is_given_up_not_fatal(tmp_path, opened):
    path = tmp_path / "j.sqlite3"
    j = opened(path)
    j.add(paid("ok"))
    db = sqlite3.connect(path)
    db.execute("INSERT INTO utterances (key, priority, text, created, updated) VALUES ('bad', 'nonsense', 't', ?, ?)",
               (time.time(), time.time()))  # fmt: skip
    db.commit()
    db.close()
    j2 = opened(path)
    live, _, _ = j2.recover()
    assert [u.text for u in live] == ["老板的醒目留言：ok"]
    assert j2.counts().get("failed") == 1


def test_one_daemon_per_journal(tmp_path, opened):
    path = tmp_path / "j.sqlite3"
    opened(path)
    with pytest.raises(JournalError) as e:
        Journal(path).open()
    assert f"pid {os.getpid()}" in str(e.value) and "state_dir" in str(e.value)
