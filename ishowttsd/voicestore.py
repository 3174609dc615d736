"""Uploaded voices: a reference recording and its transcript per voice, kept in the state folder.

Each voice is a folder ``<state dir>/voices/<id>/`` with ``reference.wav`` (written by us from
the decoded upload, never the uploaded bytes) and ``voice.json``. They survive a restart and
override a `[[voices]]` entry of the same id until it is restored. A voice id is a name, never
a path: letters and digits of any script, ``-`` and ``_``, at most 64 characters.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ishowttsd.audio import AudioRefused, read_recording, wav_bytes
from ishowttsd.config import VoiceConfig

_VOICE_ID = re.compile(r"[^\W_][\w-]{0,63}")


def check_voice_id(voice_id: str) -> str:
    """The id if it can name a voice folder; ValueError with advice otherwise."""
    if not isinstance(voice_id, str) or not _VOICE_ID.fullmatch(voice_id) or voice_id.isascii() and voice_id.upper() in _RESERVED:
        raise ValueError(f"voice id {voice_id[:80]!r} is not a plain name; use letters, digits, - and _ "
                         "(at most 64, starting with a letter or digit)")  # fmt: skip
    return voice_id


_RESERVED = {"CON", "NUL", "PRN", "AUX"}  # harmless on Linux, but a copied folder must work anywhere


class UploadRefused(ValueError):
    """An upload the bounds or the content check refuse: an API error `code` and advice."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_upload(voice_id: str, transcript: str, audio_b64: str, web) -> tuple[str, np.ndarray, int]:
    """(transcript, samples, rate) of an upload within the `[web]` bounds; raises UploadRefused."""
    try:
        check_voice_id(voice_id)
    except ValueError as e:
        raise UploadRefused("invalid_params", f"id: {e}") from None
    transcript = " ".join(transcript.split())
    if len(transcript) > web.transcript_max_chars:
        raise UploadRefused("too_large", f"transcript: {len(transcript)} characters; at most {web.transcript_max_chars} "
                            "([web] transcript_max_chars): the words of the recording, nothing more")  # fmt: skip
    if not transcript:
        raise UploadRefused("invalid_params", "transcript: write down what the recording says")
    if len(audio_b64) > int(web.upload_max_mb * 1024 * 1024) * 4 // 3 + 4:
        raise UploadRefused("too_large", f"audio: over {web.upload_max_mb:g} MB ([web] upload_max_mb)")
    try:
        data = base64.b64decode(audio_b64, validate=True)
    except (binascii.Error, ValueError):
        raise UploadRefused("invalid_params", "audio_b64: not base64") from None
    try:
        samples, rate = read_recording(data, web.upload_max_s)
    except AudioRefused as e:
        raise UploadRefused("bad_audio", f"audio: {e}") from None
    return transcript, samples, rate


class VoiceStore:
    """The uploaded voices under one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _dir(self, voice_id: str) -> Path:
        path = self.folder / check_voice_id(voice_id)
        # belt and braces: the id cannot hold a separator, and the folder is ours alone
        if path.parent != self.folder or path.is_symlink():
            raise ValueError(f"voice id {voice_id!r} does not name a folder inside {self.folder}")
        return path

    def save(self, voice_id: str, samples: np.ndarray, rate: int, transcript: str, engine: str | None,
             language: str | None) -> VoiceConfig:  # fmt: skip
        """Store a voice (replacing an earlier upload of it) and return its `[[voices]]` entry."""
        final = self._dir(voice_id)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        tmp = self.folder / f".new-{secrets.token_hex(6)}"
        tmp.mkdir(mode=0o750)
        try:
            (tmp / "reference.wav").write_bytes(wav_bytes(samples, rate))
            meta = {"id": voice_id, "engine": engine, "language": language, "reference_text": transcript,
                    "seconds": round(len(samples) / rate, 3), "uploaded": round(time.time(), 3)}  # fmt: skip
            (tmp / "voice.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
            old = None
            if final.exists():
                old = self.folder / f".old-{secrets.token_hex(6)}"
                os.replace(final, old)
            os.replace(tmp, final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return self._entry(final, meta)

    def remove(self, voice_id: str) -> bool:
        path = self._dir(voice_id)
        if not path.is_dir():
            return False
        shutil.rmtree(path)
        return True

    def has(self, voice_id: str) -> bool:
        try:
            return (self._dir(voice_id) / "voice.json").is_file()
        except ValueError:
            return False

    def entries(self) -> list[VoiceConfig]:
        """Every stored voice as a `[[voices]]` entry (unreadable folders are skipped)."""
        out = []
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") or not path.is_dir() or path.is_symlink():
                continue
            try:
                check_voice_id(path.name)
                meta = json.loads((path / "voice.json").read_text(encoding="utf-8"))
                out.append(self._entry(path, meta))
            except (OSError, ValueError):
                continue
        return out

    def info(self, voice_id: str) -> dict[str, Any] | None:
        try:
            return json.loads((self._dir(voice_id) / "voice.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @staticmethod
    def _entry(path: Path, meta: dict[str, Any]) -> VoiceConfig:
        return VoiceConfig(id=path.name, engine=meta.get("engine"), language=meta.get("language"),
                           reference_audio=str(path / "reference.wav"), reference_text=meta.get("reference_text"))  # fmt: skip
