"""F5-TTS reference voices: read, resampled, RMS-normalised, trimmed and turned into a mel once.

A prepared reference is kept in memory and on disk (``<state_dir>/f5-voices/<key>.npz``), keyed
by a hash of the audio file's bytes, its transcript and the preparation settings: a restart
reads it back, an edited recording or transcript is prepared again. torch and torchaudio are
imported inside the functions only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from ishowttsd.engines.base import EngineError
from ishowttsd.engines.f5.text import normalize_ref_text
from ishowttsd.engines.f5.weights import HOP, N_FFT, N_MELS, SAMPLE_RATE

_CACHE_VERSION = 1


@dataclass
class Reference:
    """A prepared reference voice: its mel (frames, n_mels), text, loudness and cache key."""

    key: str
    mel: Any  # torch.Tensor (frames, n_mels), fp32 on the engine's device
    text: str
    rms: float
    seconds: float


class ReferenceSettings(Protocol):
    """The engine settings that shape a prepared reference (part of its cache key)."""

    target_rms: float
    ref_max_s: float
    trim_db: float


class ReferenceCache:
    """Prepared references by content key, in memory and in `directory`; `stats` counts where
    each request was answered from (memory, disk, or a miss that prepared it)."""

    def __init__(self, directory: Path, settings: ReferenceSettings, log: logging.Logger) -> None:
        self.directory = directory
        self.settings = settings
        self.log = log
        self.stats = {"memory": 0, "disk": 0, "miss": 0}
        self._memory: dict[str, Reference] = {}
        self._lock = threading.Lock()

    def _key(self, data: bytes, text: str) -> str:
        s = self.settings
        prep = {"v": _CACHE_VERSION, "sr": SAMPLE_RATE, "hop": HOP, "n_fft": N_FFT, "mels": N_MELS,
                "rms": s.target_rms, "max_s": s.ref_max_s, "trim_db": s.trim_db}  # fmt: skip
        h = hashlib.sha256(data)
        h.update(b"\0" + text.encode() + b"\0" + json.dumps(prep, sort_keys=True).encode())
        return h.hexdigest()[:32]

    def prepare(self, path: Path, text: str, what: str, device, mel_of: Callable[[Any], Any]) -> Reference:
        """The reference for the audio at `path` and its transcript `text`; `mel_of` turns 24 kHz
        audio (a 1-D tensor) into its mel (frames, n_mels) with the model's own mel settings."""
        import torch

        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise EngineError(f"voice {what!r}: reference_audio {path} does not exist") from None
        except OSError as e:
            raise EngineError(f"voice {what!r}: cannot read reference_audio {path}: {e.strerror}") from None
        text = normalize_ref_text(text)
        key = self._key(data, text)
        with self._lock:
            if key in self._memory:
                self.stats["memory"] += 1
                return self._memory[key]
        file = self.directory / f"{key}.npz"
        ref = None
        if file.exists():
            try:
                with np.load(file) as z:
                    mel = torch.from_numpy(z["mel"]).to(device)
                    ref = Reference(key, mel, text, float(z["rms"]), float(z["seconds"]))
                self.stats["disk"] += 1
            except Exception as e:  # a damaged cache file is rebuilt, never fatal
                self.log.warning("reference cache %s unreadable (%s); rebuilding", file, e)
        if ref is None:
            self.stats["miss"] += 1
            wav, sr = read_audio(data, path, what)
            audio, rms = clean_reference(torch, wav, sr, self.settings, path, what)
            mel = mel_of(audio)
            ref = Reference(key, mel, text, rms, audio.shape[-1] / SAMPLE_RATE)
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(".tmp.npz")
                np.savez(tmp, mel=mel.float().cpu().numpy(), rms=rms, seconds=ref.seconds)
                os.replace(tmp, file)
            except OSError as e:
                self.log.warning("cannot write the reference cache %s: %s", file, e)
        with self._lock:
            self._memory[key] = ref
        return ref


def read_audio(data: bytes, path: Path, what: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise EngineError(
            f"voice {what!r}: reference_audio {path} is not readable audio ({str(e)[:120]}); expected a WAV/FLAC/OGG file"
        ) from None
    if wav.shape[0] == 0:
        raise EngineError(f"voice {what!r}: reference_audio {path} is empty; record 3-10 s of clear speech")
    return wav, sr


def clean_reference(torch, wav: np.ndarray, sr: int, s: ReferenceSettings, path: Path, what: str):
    """Mono, 24 kHz, RMS-normalised (up to target_rms, as upstream), edge silence trimmed;
    returns (audio, its RMS before normalisation)."""
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
    x = x.mean(dim=1) if x.ndim == 2 else x
    if sr != SAMPLE_RATE:
        x = AF.resample(x, sr, SAMPLE_RATE)
    # trim edge silence as upstream's remove_silence_edges does: 10 ms chunks counted from each
    # end while their RMS is under trim_db dBFS, then 50 ms of silence appended
    frame = SAMPLE_RATE // 100
    if x.shape[0] < frame:
        raise EngineError(f"voice {what!r}: reference_audio {path} is shorter than 10 ms; record 3-10 s of clear speech")
    start = _leading_silence(torch, x, frame, s.trim_db)
    if start >= x.shape[0]:
        raise EngineError(f"voice {what!r}: reference_audio {path} is silent; record 3-10 s of clear speech")
    end = x.shape[0] - _leading_silence(torch, x[start:].flip(0), frame, s.trim_db)
    x = x[start:end][: int(s.ref_max_s * SAMPLE_RATE)]
    if x.shape[0] < SAMPLE_RATE // 2:
        raise EngineError(f"voice {what!r}: reference_audio {path} has under 0.5 s of sound; record 3-10 s of clear speech")
    x = torch.cat([x, x.new_zeros(SAMPLE_RATE // 20)])
    rms = float(torch.sqrt(torch.mean(x.square())))
    if rms < s.target_rms:
        x = x * (s.target_rms / max(rms, 1e-8))
    return x, rms


def _leading_silence(torch, x, frame: int, thr_db: float) -> int:
    """Samples of silence at the start of `x`, in whole `frame` chunks (pydub's
    detect_leading_silence: the last chunk may be short)."""
    n = -(-x.shape[0] // frame)
    pad = torch.cat([x, x.new_zeros(n * frame - x.shape[0])]).view(n, frame)
    counts = torch.full((n,), float(frame))
    counts[-1] = x.shape[0] - (n - 1) * frame
    db = 10 * torch.log10((pad.square().sum(dim=1) / counts).clamp(min=1e-12))
    loud = torch.nonzero(db >= thr_db).flatten()
    return x.shape[0] if loud.numel() == 0 else int(loud[0]) * frame
