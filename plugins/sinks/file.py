"""File sink: one 16-bit mono WAV per utterance plus a JSONL log of what was said.

Audio is written to ``NAME.wav.part`` as it arrives and renamed when the utterance is
complete, so a crash, a skip or a shutdown never leaves a half-written WAV behind. Each
completed utterance appends one line to ``spoken.jsonl``: when, who, what, kind, RTF.
"""

from __future__ import annotations

import json
import os
import re
import time
import wave
from datetime import datetime, timezone
from pathlib import Path

import anyio
from pydantic import Field

from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import Playback, Sink, SinkSettings

_UNSAFE = re.compile(r"[^\w.-]+", re.UNICODE)


class FileSettings(SinkSettings):
    directory: str = Field(default="out", description="relative to the config file")
    log_name: str = "spoken.jsonl"
    keep_cut: bool = Field(default=False, description="keep WAVs of skipped utterances (as *.cut.wav)")


class FileSink(Sink):
    type = "file"
    Settings = FileSettings

    async def start(self) -> None:
        self.dir = self.ctx.config.resolve(self.settings.directory)
        await anyio.to_thread.run_sync(lambda: self.dir.mkdir(parents=True, exist_ok=True))
        for stale in self.dir.glob("*.part"):  # left by a power cut
            stale.unlink(missing_ok=True)
        self.set_state("ok", str(self.dir))

    async def play(self, pb: Playback) -> None:
        utt = pb.utterance
        m = utt.message
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
                await anyio.to_thread.run_sync(w.close)
                if completed:
                    await anyio.to_thread.run_sync(os.replace, part, final)
                elif self.settings.keep_cut:
                    await anyio.to_thread.run_sync(os.replace, part, final.with_suffix(".cut.wav"))
                else:
                    await anyio.to_thread.run_sync(lambda: part.unlink(missing_ok=True))
        record = {
            "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "id": utt.id,
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
        await anyio.to_thread.run_sync(_append, self.dir / self.settings.log_name, line)
        self.counters["files"] += 1


def _open_wav(path: Path, rate: int) -> wave.Wave_write:
    w = wave.open(str(path), "wb")
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    return w


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()


@hookimpl
def ishowtts_register_sinks(register):
    register(FileSink)
