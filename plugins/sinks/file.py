"""File sink: one 16-bit mono WAV per utterance plus a JSONL log of what was said.

Audio is written to ``NAME.wav.part`` as it arrives and renamed when the utterance is
complete, so a crash, a skip or a shutdown never leaves a half-written WAV behind. Each
completed utterance appends one line to ``spoken.jsonl``: when, who, what, kind, RTF.

A 12-hour stream must not fill the disk: after each utterance the oldest WAVs are removed
until the folder is within ``max_files``, ``max_age_hours`` and ``max_total_mb``, and
before each one until the filesystem has ``min_free_mb`` free. The log rotates to
``spoken.jsonl.1`` ... at ``log_max_mb``. A full disk (ENOSPC, EDQUOT) is reported in
`status` as ``disk_full`` and the utterance is skipped for this sink; it is never fatal,
and the sink recovers by itself once there is room.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import time
import wave
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field

from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import NotPlayed, Playback, Sink, SinkSettings

_UNSAFE = re.compile(r"[^\w.-]+", re.UNICODE)
# only files this sink wrote are ever removed by retention
_OURS = re.compile(r"^\d{8}-\d{6}_\d{6}_.*\.wav$")
_FULL = (errno.ENOSPC, errno.EDQUOT)
_RECENT_KEYS = 20_000  # utterances remembered as written, against a replay after a crash
_RECENT_LOG_BYTES = 4 * 2**20  # how much of the log's end is read for them at start


class FileSettings(SinkSettings):
    directory: str = Field(default="out", description="relative to the config file")
    log_name: str = "spoken.jsonl"
    keep_cut: bool = Field(default=False, description="keep WAVs of skipped utterances (as *.cut.wav)")
    # retention: the oldest WAVs go first; 0 or unset switches a limit off
    max_files: int | None = Field(default=None, ge=0, description="keep at most this many WAVs")
    max_age_hours: float | None = Field(default=None, ge=0, description="remove WAVs older than this")
    max_total_mb: float | None = Field(default=1024.0, ge=0, description="keep the WAVs under this many MB in all")
    min_free_mb: float = Field(default=200.0, ge=0, description="remove old WAVs, then skip writing, below this free space")
    log_max_mb: float = Field(default=10.0, gt=0, description="rotate the JSONL log at this size")
    log_keep: int = Field(default=5, ge=0, description="rotated logs to keep (spoken.jsonl.1 ...)")


class DiskFull(Exception):
    pass


class FileSink(Sink):
    type = "file"
    Settings = FileSettings

    async def start(self) -> None:
        self.dir = self.ctx.config.resolve(self.settings.directory)
        self._written: OrderedDict[str, None] = OrderedDict()
        await anyio.to_thread.run_sync(self._prepare_dir)
        await anyio.to_thread.run_sync(self._load_written)
        await anyio.to_thread.run_sync(self._prune)
        self.set_state("ok", str(self.dir))

    def _load_written(self) -> None:
        """The keys of utterances this sink wrote whole, from the end of its log: an utterance
        played again after a crash (it was written, but the daemon died before it knew) is not
        written twice."""
        path = self.dir / self.settings.log_name
        try:
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - _RECENT_LOG_BYTES))
                tail = f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return
        for line in tail:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # the partial first line of the tail, or a torn last one
            if isinstance(rec, dict) and isinstance(rec.get("key"), str) and not rec.get("cut"):
                self._remember(rec["key"])

    def _remember(self, key: str) -> None:
        self._written[key] = None
        while len(self._written) > _RECENT_KEYS:
            self._written.popitem(last=False)

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("*.part"):  # left by a power cut
            stale.unlink(missing_ok=True)

    async def play(self, pb: Playback) -> None:
        if pb.key in self._written:
            self.counters["already_written"] += 1
            return
        try:
            await self._play(pb)
        except OSError as e:
            if e.errno not in _FULL:
                raise
            self._disk_full(f"{type(e).__name__}: {e}")
            raise NotPlayed(self.detail) from None
        except DiskFull as e:
            self._disk_full(str(e))
            raise NotPlayed(self.detail) from None
        if self.state == "disk_full":
            self.set_state("ok", str(self.dir))

    def _disk_full(self, error: str) -> None:
        self.counters["disk_full"] += 1
        self.set_state(
            "disk_full",
            f"no space left in {self.dir}; this utterance was not saved. Free space, or lower max_total_mb / max_files",
            error=error,
        )
        self.log.warning("disk full in %s: %s", self.dir, error)

    async def _play(self, pb: Playback) -> None:
        utt = pb.utterance
        m = utt.message
        if not await anyio.to_thread.run_sync(self._make_room):
            raise DiskFull(f"less than {self.settings.min_free_mb:g} MB free in {self.dir} even after removing old WAVs")
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        who = _UNSAFE.sub("_", m.user.name if m else utt.source or "say")[:24].strip("_") or "anon"
        final = self.dir / f"{stamp}_{utt.id:06d}_{who}.wav"
        part = final.with_name(final.name + ".part")
        w = await anyio.to_thread.run_sync(_open_wav, part, pb.sample_rate)
        completed = False
        try:
            async for chunk in pb.chunks():
                await anyio.to_thread.run_sync(w.writeframes, chunk.pcm16())
            completed = not pb.stats.cut
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._finish, w, part, final, completed)
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "id": utt.id,
            "key": pb.key,
            "file": final.name,
            "said": utt.text,
            "priority": utt.priority.name.lower(),
            "source": utt.source,
            "platform": m.platform if m else None,
            "kind": m.kind.value if m else "say",
            "user": m.user.name if m else None,
            "user_id": m.user.id if m else None,
            "text": m.text if m else utt.text,
            "message_id": m.id if m else None,
            "queued_s": round(time.monotonic() - utt.created, 3),
            **pb.stats.to_dict(),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        await anyio.to_thread.run_sync(self._append, line)
        if completed:
            self._remember(pb.key)
        self.counters["files"] += 1
        await anyio.to_thread.run_sync(self._prune)

    def _finish(self, w: wave.Wave_write, part: Path, final: Path, completed: bool) -> None:
        try:
            w.close()  # writes the header's sizes: can itself hit a full disk
        except OSError:
            part.unlink(missing_ok=True)
            raise
        if completed:
            os.replace(part, final)
        elif self.settings.keep_cut:
            os.replace(part, final.with_suffix(".cut.wav"))
        else:
            part.unlink(missing_ok=True)

    def _append(self, line: str) -> None:
        path = self.dir / self.settings.log_name
        s = self.settings
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line.encode()) > s.log_max_mb * 1e6:

            def rotated(i: int) -> Path:
                return path.with_name(f"{path.name}.{i}")

            rotated(s.log_keep).unlink(missing_ok=True)
            for i in range(s.log_keep - 1, 0, -1):
                if rotated(i).exists():
                    os.replace(rotated(i), rotated(i + 1))
            if s.log_keep:
                os.replace(path, rotated(1))
            else:
                path.unlink()
            self.counters["log_rotations"] += 1
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()

    # -- retention -------------------------------------------------------------------------

    def _ours(self) -> list[tuple[str, float, int]]:
        """(name, mtime, size) of the WAVs this sink wrote, oldest first."""
        out = []
        with os.scandir(self.dir) as it:
            for e in it:
                if _OURS.match(e.name) and e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    out.append((e.name, st.st_mtime, st.st_size))
        out.sort(key=lambda t: (t[1], t[0]))
        return out

    def _remove(self, name: str) -> None:
        try:
            (self.dir / name).unlink()
            self.counters["removed"] += 1
        except FileNotFoundError:
            pass

    def _prune(self) -> None:
        """Remove the oldest WAVs until every configured limit holds."""
        s = self.settings
        files = self._ours()
        now = time.time()
        if s.max_age_hours:
            cutoff = now - s.max_age_hours * 3600
            while files and files[0][1] < cutoff:
                self._remove(files.pop(0)[0])
        if s.max_files:
            while len(files) > s.max_files:
                self._remove(files.pop(0)[0])
        if s.max_total_mb:
            total = sum(f[2] for f in files)
            while files and total > s.max_total_mb * 1e6:
                name, _, size = files.pop(0)
                self._remove(name)
                total -= size

    def _make_room(self) -> bool:
        """Free space for the next WAV by removing the oldest ones; False if that is not enough."""
        want = self.settings.min_free_mb * 1e6
        if not want:
            return True
        files = None
        while shutil.disk_usage(self.dir).free < want:
            if files is None:
                files = self._ours()
            if not files:
                return False
            self._remove(files.pop(0)[0])
        return True

    def status(self) -> dict[str, Any]:
        st = super().status()
        if hasattr(self, "dir"):
            st["directory"] = str(self.dir)
        return st


def _open_wav(path: Path, rate: int) -> wave.Wave_write:
    w = wave.open(str(path), "wb")
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    return w


@hookimpl
def ishowtts_register_sinks(register):
    register(FileSink)
