"""Audio files in and out: encoding speech for callers, and checking uploaded recordings.

Encoders are libsndfile's (the `soundfile` wheel carries it with FLAC, Ogg Opus and MP3), so
every format works offline on any box the daemon installs on. Uploads are read by content,
never by their name: a file that libsndfile cannot decode as audio is refused.
"""

from __future__ import annotations

import io
import math

import numpy as np

# OpenAI's `pcm` is 24 kHz signed 16-bit little-endian mono; Opus takes only a few rates
PCM_RATE = 24_000
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)

# format -> (content type, libsndfile container, subtype)
FORMATS: dict[str, tuple[str, str | None, str | None]] = {
    "wav": ("audio/wav", "WAV", "PCM_16"),
    "pcm": ("audio/pcm", None, None),
    "flac": ("audio/flac", "FLAC", "PCM_16"),
    "mp3": ("audio/mpeg", "MP3", "MPEG_LAYER_III"),
    "opus": ("audio/ogg", "OGG", "OPUS"),
}
# containers an uploaded reference recording may come in (checked on the decoded content)
UPLOAD_CONTAINERS = ("WAV", "WAVEX", "FLAC", "OGG", "MP3")


class AudioRefused(ValueError):
    """An uploaded file is not usable audio; the message says why and what to send instead."""


def resample(samples: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples.astype(np.float32, copy=False), rate, to).astype(np.float32, copy=False)


def pcm16(samples: np.ndarray) -> bytes:
    """Little-endian signed 16-bit PCM of float samples in [-1, 1]."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """A 16-bit mono WAV file."""
    return encode(samples, rate, "wav")[0]


def wav_from_pcm16(pcm: bytes, rate: int) -> bytes:
    """A WAV file around 16-bit mono PCM that is already encoded (history keeps PCM)."""
    import struct

    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(pcm), b"WAVE", b"fmt ", 16, 1, 1, rate,
                         rate * 2, 2, 16, b"data", len(pcm))  # fmt: skip
    return header + pcm


def encode(samples: np.ndarray, rate: int, fmt: str) -> tuple[bytes, str]:
    """(file bytes, content type) of mono float samples in one of :data:`FORMATS`."""
    content_type, container, subtype = FORMATS[fmt]
    if fmt == "pcm":
        return pcm16(resample(samples, rate, PCM_RATE)), content_type
    if fmt == "wav":
        return wav_from_pcm16(pcm16(samples), rate), content_type
    if fmt == "opus" and rate not in _OPUS_RATES:
        samples, rate = resample(samples, rate, PCM_RATE), PCM_RATE
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0).astype(np.float32, copy=False), rate, format=container, subtype=subtype)
    return buf.getvalue(), content_type


def read_recording(data: bytes, max_seconds: float) -> tuple[np.ndarray, int]:
    """Decode an uploaded recording to mono float32; raises AudioRefused with advice."""
    import soundfile as sf

    if len(data) < 44:
        raise AudioRefused("the file is too short to be a recording; send a WAV (or FLAC, Ogg, MP3) of the voice")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in UPLOAD_CONTAINERS:
                raise AudioRefused(f"{f.format} files are not accepted; send a WAV, FLAC, Ogg or MP3 recording")
            rate, channels, frames = f.samplerate, f.channels, f.frames
            if not (8000 <= rate <= 192_000) or not (1 <= channels <= 8):
                raise AudioRefused(f"{rate} Hz with {channels} channels is not a voice recording; send 16-48 kHz mono or stereo")
            if frames <= 0 or frames / rate > max_seconds:
                raise AudioRefused(f"the recording is {frames / rate:.1f} s long; send 3-{max_seconds:g} s of clear speech")
            audio = f.read(dtype="float32", always_2d=True)
    except AudioRefused:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        why = getattr(e, "error_string", "") or type(e).__name__
        raise AudioRefused(f"the file is not audio that can be decoded ({why}); "
                           "send a WAV, FLAC, Ogg or MP3 recording") from None  # fmt: skip
    mono = audio.mean(axis=1)
    if not len(mono) or not np.isfinite(mono).all():
        raise AudioRefused("the recording holds no usable samples; record it again")
    peak = float(np.abs(mono).max())
    if peak < 1e-3 or math.isclose(peak, 0.0):
        raise AudioRefused("the recording is silent; check the microphone and record it again")
    return mono.astype(np.float32), rate
