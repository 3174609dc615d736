"""The durable journal of owed speech: an SQLite database in WAL mode that survives a crash.

The paid-speech policy (``paid.py``) decides what goes in and when it ends; this module keeps it.
``$XDG_STATE_HOME/ishowtts/journal.sqlite3`` by default. Each write is its own committed
transaction, so after SIGKILL, a power cut (with ``synchronous = "full"``) or a restart, the rows
still ``pending`` or ``parked`` are exactly what was accepted and not yet finished.

- A row is keyed by the utterance's stable key (``Utterance.key``); ``parked`` rows wait in the
  journal only, because the queue already holds as much owed speech as memory may.
- ``deliveries`` records each sink that played an utterance to its end, the moment it did: after
  a restart an utterance is played again only to the sinks that had not finished it, so a sink
  never plays the same owed utterance twice.
- ``attempts`` counts syntheses started and not completed; an utterance that keeps crashing the
  daemon is given up after ``max_attempts`` instead of crash-looping it.

Faults degrade, they do not kill: a corrupt database is moved aside (kept, with a timestamp, for
inspection), what can be read from it is carried into a fresh one, and the damage is reported;
committed transactions lost to a damaged WAL are counted and reported; a write that fails (a
full disk) is reported in ``status`` and ``health`` and the daemon keeps speaking.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import struct
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ishowttsd.messages import Message, Priority, Utterance

log = logging.getLogger("ishowttsd.journal")

FINAL_STATES = frozenset({"spoken", "dropped", "expired", "cut", "failed"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS utterances (
    key      TEXT PRIMARY KEY,
    state    TEXT NOT NULL DEFAULT 'pending',
    reason   TEXT NOT NULL DEFAULT '',
    priority TEXT NOT NULL,
    text     TEXT NOT NULL,
    voice    TEXT,
    source   TEXT NOT NULL DEFAULT '',
    message  TEXT,
    created  REAL NOT NULL,
    deadline REAL,
    updated  REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS utterances_state ON utterances(state);
CREATE TABLE IF NOT EXISTS deliveries (
    key  TEXT NOT NULL,
    sink TEXT NOT NULL,
    at   REAL NOT NULL,
    PRIMARY KEY (key, sink)
);
"""
_COLUMNS = "key, state, priority, text, voice, source, message, created, deadline, attempts"


class JournalError(Exception):
    """The journal cannot be opened or written: the message says where and what to do."""


@dataclass
class Stale:
    """A journaled utterance whose time-to-live ran out while the daemon was not running."""

    key: str
    text: str
    priority: str
    created: float
    deadline: float
    message: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        m = self.message or {}
        return {
            "key": self.key, "text": self.text, "priority": self.priority,
            "age_s": round(time.time() - self.created, 1), "late_by_s": round(time.time() - self.deadline, 1),
            "platform": m.get("platform"), "kind": m.get("kind"), "user": (m.get("user") or {}).get("name"),
            "message_id": m.get("id"),
        }  # fmt: skip


@dataclass
class Damage:
    """What was wrong with the journal when it was opened, and what was done about it."""

    what: str  # "corrupt" or "wal"
    detail: str
    moved_to: str | None = None
    salvaged: int = 0
    lost_transactions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "detail": self.detail, "moved_to": self.moved_to, "salvaged": self.salvaged,
                "lost_transactions": self.lost_transactions}  # fmt: skip


class Journal:
    """Owed utterances accepted and not yet finished, and the sinks that played them."""

    def __init__(self, path: Path, synchronous: str = "full", max_attempts: int = 5) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        self.max_attempts = max_attempts
        self._db: sqlite3.Connection | None = None
        self._lock: int | None = None
        self._tracked: set[str] = set()  # keys of rows held in memory (queue, speaker, waiting)
        self._attempts: dict[str, int] = {}  # key -> syntheses started and not completed
        self.written = 0
        self.error: str | None = None  # the last write failure, until a write succeeds again
        self.damage: Damage | None = None

    # -- opening ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the journal. A corrupt file is moved aside and a fresh one started
        (see `damage`); a folder or disk that cannot be written raises JournalError."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._take_lock()
        except OSError as e:
            self._release_lock()
            raise JournalError(self._cannot(e)) from None
        wal = _wal_commits(self.path.with_name(self.path.name + "-wal"))
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as e:
            if not _is_corruption(e):
                self._release_lock()
                raise JournalError(self._cannot(e)) from None
            self._db = None
            self._start_fresh(e)
        except OSError as e:
            self._release_lock()
            raise JournalError(self._cannot(e)) from None
        if wal is not None and self.damage is None:
            self._check_wal(wal)
        os.chmod(self.path, 0o600)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            db.execute(f"PRAGMA synchronous={self.synchronous}")
            db.execute("PRAGMA busy_timeout=2000")
            db.executescript(_SCHEMA)
            db.execute("SELECT COUNT(*) FROM utterances").fetchone()
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("database disk image is malformed (quick_check)")
        except BaseException:
            db.close()
            raise
        return db

    def _cannot(self, e: BaseException) -> str:
        return (f"journal {self.path}: cannot open it ({e}); check that the state directory is writable and "
                f"has free space, or set [journal] path, or [journal] enabled = false to run without one")  # fmt: skip

    def _start_fresh(self, e: BaseException) -> None:
        """The file is not a readable database: keep it for inspection, salvage what reads, start anew."""
        rows = _salvage(self.path)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as e2:
            self._release_lock()
            raise JournalError(self._cannot(e2)) from None
        for row in rows:
            self._write(f"INSERT OR IGNORE INTO utterances ({_COLUMNS}, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (*row, time.time()))  # fmt: skip
        self.damage = Damage("corrupt", f"{type(e).__name__}: {e}", str(aside), salvaged=len(rows))
        log.error("journal %s was corrupt (%s): moved aside to %s, %d unfinished row(s) carried over into a fresh one",
                  self.path, e, aside, len(rows))  # fmt: skip

    def _check_wal(self, commits: list[int]) -> None:
        """Committed transactions in the WAL that SQLite could not use (a damaged frame before
        them) are lost: count them and say so, since owed speech may be among them."""
        try:
            _busy, valid_frames, _done = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return
        lost = sum(1 for frame in commits if frame > valid_frames)
        if lost and valid_frames >= 0:
            self.damage = Damage("wal", f"{lost} committed transaction(s) after frame {valid_frames} of the WAL were "
                                        "unreadable and lost", lost_transactions=lost)  # fmt: skip
            log.error("journal %s: %s; owed speech accepted just before the crash may be missing", self.path, self.damage.detail)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._release_lock()

    def _take_lock(self) -> None:
        # two daemons on one journal would each say the other's owed speech: one owner at a time
        # (a flock dies with its process, so a SIGKILL never leaves a stale lock behind)
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise JournalError(
                f"journal {self.path} is in use by another ishowttsd (pid {owner}); give each daemon its own "
                f"[daemon] state_dir or [journal] path"
            ) from None
        self._lock = fd  # held from here on: released by _release_lock, also when what follows fails
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())

    def _release_lock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    # -- writing ----------------------------------------------------------------------------------

    def _exec(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        if self._db is None:
            raise JournalError("the journal is not open")
        cur = self._db.execute(sql, args)
        self.written += 1
        return cur

    def _write(self, sql: str, args: tuple = ()) -> bool:
        """A write that must never take speech down: a full disk or a read-only file degrades
        the journal (reported in status and health) instead of raising into the pipeline."""
        try:
            self._exec(sql, args)
        except (sqlite3.Error, JournalError) as e:
            msg = f"journal write failed ({type(e).__name__}: {e}); paid speech is not protected against a crash until this is fixed"
            if msg != self.error:
                log.error("%s", msg)
            self.error = msg
            return False
        self.error = None
        return True

    # -- the life of one utterance ---------------------------------------------------------------

    def add(self, utt: Utterance, parked: bool = False) -> bool:
        """Journal an accepted utterance (committed before this returns); `parked`: it waits
        here, not in memory. Returns False when the write failed (the journal is degraded)."""
        now = time.time()
        deadline = None if utt.deadline is None else now + (utt.deadline - time.monotonic())
        msg = json.dumps(utt.message.to_dict(), ensure_ascii=False, default=str) if utt.message else None
        ok = self._write(
            "INSERT OR REPLACE INTO utterances (key, state, priority, text, voice, source, message, created, deadline, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (utt.key, "parked" if parked else "pending", utt.priority.name.lower(), utt.text, utt.voice, utt.source,
             msg, utt.created_wall, deadline, now),
        )  # fmt: skip
        if ok and not parked:
            self._tracked.add(utt.key)
        return ok

    def tracks(self, utt: Utterance) -> bool:
        return utt.key in self._tracked

    def update_text(self, utt: Utterance) -> None:
        """A gift combo grew: the waiting utterance says a new total."""
        if utt.key in self._tracked:
            self._write("UPDATE utterances SET text = ?, updated = ? WHERE key = ?", (utt.text, time.time(), utt.key))

    def started(self, utt: Utterance) -> int:
        """The speaker starts synthesizing it: one more attempt. Returns the attempts so far."""
        if utt.key not in self._tracked:
            return 0
        self._attempts[utt.key] = self._attempts.get(utt.key, 0) + 1
        self._write("UPDATE utterances SET attempts = attempts + 1, updated = ? WHERE key = ?", (time.time(), utt.key))
        return self._attempts[utt.key]

    def synthesized(self, utt: Utterance) -> None:
        """Its synthesis completed: that attempt did not fail and does not count against it."""
        if utt.key in self._tracked and self._attempts.get(utt.key, 0) > 0:
            self._attempts[utt.key] -= 1
            self._write("UPDATE utterances SET attempts = MAX(attempts - 1, 0), updated = ? WHERE key = ?",
                        (time.time(), utt.key))  # fmt: skip

    def attempts(self, utt: Utterance) -> int:
        return self._attempts.get(utt.key, 0)

    def delivered(self, utt: Utterance, sink: str) -> None:
        """`sink` played `utt` to its end: after a restart it is not played there again."""
        if utt.key in self._tracked:
            self._write("INSERT OR IGNORE INTO deliveries (key, sink, at) VALUES (?, ?, ?)", (utt.key, sink, time.time()))

    def finish(self, utt: Utterance, state: str, reason: str = "") -> None:
        """Mark the end of an utterance (spoken, dropped, expired, cut, failed); unknown ones are ignored."""
        if state not in FINAL_STATES:
            raise ValueError(f"unknown final state {state!r}")
        if utt.key not in self._tracked:
            return
        self._tracked.discard(utt.key)
        self._attempts.pop(utt.key, None)
        self._write("UPDATE utterances SET state = ?, reason = ?, updated = ? WHERE key = ? AND state IN ('pending', 'parked')",
                    (state, reason, time.time(), utt.key))  # fmt: skip

    def unpark(self, limit: int) -> list[Utterance]:
        """Up to `limit` parked utterances, oldest first, now held in memory again."""
        if limit <= 0 or self._db is None:
            return []
        try:
            rows = self._exec(f"SELECT {_COLUMNS} FROM utterances WHERE state = 'parked' ORDER BY created, rowid LIMIT ?",
                              (limit,)).fetchall()  # fmt: skip
        except (sqlite3.Error, JournalError):
            return []
        out = []
        for row in rows:
            utt = self._utterance(row, time.time(), time.monotonic(), set())
            if utt is not None and self._write("UPDATE utterances SET state = 'pending', updated = ? WHERE key = ?",
                                               (time.time(), utt.key)):  # fmt: skip
                self._tracked.add(utt.key)
                out.append(utt)
        return out

    def park(self, utt: Utterance) -> None:
        """Hold `utt` in the journal only (memory has no room for more owed speech)."""
        if utt.key in self._tracked and self._write("UPDATE utterances SET state = 'parked', updated = ? WHERE key = ?",
                                                    (time.time(), utt.key)):  # fmt: skip
            self._tracked.discard(utt.key)

    def parked(self) -> int:
        try:
            return self._exec("SELECT COUNT(*) FROM utterances WHERE state = 'parked'").fetchone()[0]
        except (sqlite3.Error, JournalError):
            return 0

    # -- after a restart --------------------------------------------------------------------------

    def recover(self) -> tuple[list[Utterance], list[Stale], list[Stale]]:
        """What was pending when the daemon stopped: (to queue again, stale, given up). Each
        utterance to queue again carries the sinks that already played it (`delivered`).

        Parked rows stay parked (the policy unparks them as the queue has room); stale and
        given-up rows are marked finished here, so they are reported only once.
        """
        rows = self._exec(f"SELECT {_COLUMNS} FROM utterances WHERE state = 'pending' ORDER BY created, rowid").fetchall()
        delivered: dict[str, set[str]] = {}
        for key, sink in self._exec("SELECT d.key, d.sink FROM deliveries d JOIN utterances u ON u.key = d.key "
                                    "WHERE u.state IN ('pending', 'parked')").fetchall():  # fmt: skip
            delivered.setdefault(key, set()).add(sink)
        now, mono = time.time(), time.monotonic()
        live, stale, given_up = [], [], []
        for row in rows:
            key, _state, prio, text, _voice, _source, msg, created, deadline, attempts = row
            mdict = _loads(msg)
            if deadline is not None and deadline < now:
                stale.append(Stale(key, text, prio, created, deadline, mdict))
                self._write("UPDATE utterances SET state='expired', reason='stale_after_restart', updated=? WHERE key=?",
                            (now, key))  # fmt: skip
                continue
            if attempts >= self.max_attempts:  # attempts = syntheses started and not completed
                given_up.append(Stale(key, text, prio, created, deadline or now, mdict))
                self._write("UPDATE utterances SET state='failed', reason='too_many_attempts', updated=? WHERE key=?",
                            (now, key))  # fmt: skip
                continue
            utt = self._utterance(row, now, mono, delivered.get(key, set()))
            if utt is not None:
                self._tracked.add(key)
                self._attempts[key] = attempts
                live.append(utt)
        return live, stale, given_up

    def _utterance(self, row: tuple, now: float, mono: float, delivered: set[str]) -> Utterance | None:
        key, _state, prio, text, voice, source, msg, created, deadline, _attempts = row
        try:
            priority = Priority.parse(prio)
            mdict = _loads(msg)
            message = Message.from_dict(mdict) if mdict else None
        except (ValueError, TypeError) as e:
            log.warning("journal entry %s cannot be read back (%s); giving it up", key, e)
            self._write("UPDATE utterances SET state='failed', reason='unreadable', updated=? WHERE key=?", (now, key))
            return None
        return Utterance(
            text=text, priority=priority, voice=voice, source=source or "journal", message=message,
            deadline=None if deadline is None else mono + (deadline - now),
            created=mono - max(0.0, now - created), created_wall=created, key=key, delivered=set(delivered),
        )  # fmt: skip

    def recent_message_ids(self, since_s: float = 3600.0) -> list[tuple[str, str]]:
        """(platform, message id) of recent entries, so a source that replays them is not read twice."""
        rows = self._exec(
            "SELECT message FROM utterances WHERE created > ? AND message IS NOT NULL", (time.time() - since_s,)
        ).fetchall()
        out = []
        for (msg,) in rows:
            d = _loads(msg) or {}
            if d.get("id") and d.get("platform"):
                out.append((str(d["platform"]), str(d["id"])))
        return out

    def prune(self, keep_days: float) -> int:
        cutoff = time.time() - keep_days * 86400
        self._exec("DELETE FROM deliveries WHERE key IN (SELECT key FROM utterances WHERE state NOT IN "
                   "('pending', 'parked') AND updated < ?)", (cutoff,))  # fmt: skip
        cur = self._exec("DELETE FROM utterances WHERE state NOT IN ('pending', 'parked') AND updated < ?", (cutoff,))
        return cur.rowcount

    def counts(self) -> dict[str, int]:
        try:
            rows = self._exec("SELECT state, COUNT(*) FROM utterances GROUP BY state").fetchall()
        except (sqlite3.Error, JournalError):
            return {}
        return {state: n for state, n in rows}

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "pending": len(self._tracked), "parked": self.parked(), "writes": self.written,
                "error": self.error, "damage": self.damage.to_dict() if self.damage else None}  # fmt: skip


def _loads(s: str | None) -> dict[str, Any] | None:
    if not s:
        return None
    try:
        d = json.loads(s)
    except json.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


def _is_corruption(e: sqlite3.DatabaseError) -> bool:
    text = str(e).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def _salvage(path: Path) -> list[tuple]:
    """Unfinished rows that can still be read out of a damaged database, row by row."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return []
    out: list[tuple] = []
    try:
        for rowid in [r[0] for r in db.execute("SELECT rowid FROM utterances NOT INDEXED WHERE state IN ('pending', 'parked')")]:
            try:
                row = db.execute(f"SELECT {_COLUMNS} FROM utterances WHERE rowid = ?", (rowid,)).fetchone()
            except sqlite3.Error:
                continue
            if row is not None:
                out.append(row)
    except sqlite3.Error:
        pass
    finally:
        db.close()
    return out


_WAL_HEADER = struct.Struct(">IIIIIIII")  # magic, version, page size, checkpoint seq, salt1, salt2, checksums
_FRAME_HEADER = struct.Struct(">IIIIII")  # page number, db size after commit (0 = not a commit), salt1, salt2, checksums


def _wal_commits(wal: Path) -> list[int] | None:
    """The frame numbers (1-based) of commit frames written in this WAL generation, whether or
    not SQLite will find them valid; None when there is no WAL to check."""
    try:
        data = wal.read_bytes()
    except OSError:
        return None
    if len(data) < _WAL_HEADER.size:
        return None
    magic, _v, page_size, _seq, salt1, salt2, _c1, _c2 = _WAL_HEADER.unpack_from(data)
    if magic not in (0x377F0682, 0x377F0683) or not page_size:
        return None
    commits, frame, pos = [], 0, _WAL_HEADER.size
    step = _FRAME_HEADER.size + page_size
    while pos + step <= len(data):
        _page, commit, s1, s2, _c1, _c2 = _FRAME_HEADER.unpack_from(data, pos)
        if (s1, s2) != (salt1, salt2):
            break  # a frame of an earlier generation: SQLite ignores these by design
        frame += 1
        if commit:
            commits.append(frame)
        pos += step
    return commits
