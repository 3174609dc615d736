"""ALSA sink: plays speech on a sound card through pyalsaaudio, with instant skip.

The PCM is opened non-blocking and kept open between utterances, so the next utterance
continues where the last one ended (gapless). Every write hands alsa-lib only what fits
(at most a few milliseconds of work) in a worker thread; all waiting happens on the event
loop, so a skip cancels at once and `drop()` throws away what the card still had queued.

How far ahead of the sound we write is bounded by the buffer (periods x period), measured
by the device where it reports its queue and by a clock of our own where it does not
(`null`, `file` and some network PCMs accept any amount at once). That bound is what makes
a skip stop the sound within one buffer, even on those devices.

A missing or busy device is reported in `status` and retried with the project's Backoff at
the next utterance after the delay; meanwhile this sink lets utterances pass (counted as
`missed`) and the other sinks and the queue go on.
"""

from __future__ import annotations

import errno
import time
from typing import Any, Literal

import anyio
import numpy as np
from pydantic import Field

from ishowttsd.reconnect import Backoff
from ishowttsd.hookspecs import hookimpl
from ishowttsd.sink import NotPlayed, Playback, Sink, SinkSettings

try:  # the sink reports a missing binding clearly instead of breaking plugin loading
    import alsaaudio
except ImportError as e:  # pragma: no cover - depends on the machine
    alsaaudio = None
    _IMPORT_ERROR = str(e)


class AlsaSettings(SinkSettings):
    device: str = Field(default="default", description="an ALSA PCM name: default, plughw:1,0, hw:0,3 (see `aplay -L`)")
    rate: int | None = Field(
        default=None, ge=8000, le=384000,
        description="open the device at this rate and resample here; default: the engine's rate",
    )  # fmt: skip
    channels: int | None = Field(default=None, ge=1, le=32, description="default 1; mono is copied to every channel")
    volume: float = Field(default=1.0, ge=0.0, le=4.0, description="linear gain; 1.0 leaves the audio as it is")
    period_ms: float = Field(default=10.0, ge=1.0, le=500.0, description="ALSA period; smaller = faster skip")
    periods: int = Field(default=4, ge=2, le=64, description="periods in the buffer; raise it if status shows xruns")
    resample_quality: Literal["VHQ", "HQ", "MQ", "LQ", "QQ"] = "HQ"
    retry_s: float = Field(default=1.0, gt=0.0, le=60.0, description="first retry delay when the device is missing or busy")
    retry_max_s: float = Field(default=20.0, gt=0.0, le=600.0)


# sample formats we can produce, in the order we ask for them
_FORMATS = {
    "S16_LE": ("<i2", 32767.0),
    "S32_LE": ("<i4", 2147483647.0),
    "FLOAT_LE": ("<f4", 1.0),
}


class _Clock:
    """How many seconds of written audio are still ahead of the sound."""

    def __init__(self) -> None:
        self.t0: float | None = None
        self.frames = 0
        self.rate = 1
        self.paused_at: float | None = None

    def ahead(self, now: float) -> float:
        if self.t0 is None:
            return 0.0
        if self.paused_at is not None:
            now = self.paused_at
        a = self.frames / self.rate - (now - self.t0)
        if a < 0:  # the sound ran out (idle, or we fell behind): start counting afresh
            self.t0, self.frames = None, 0
            return 0.0
        return a

    def wrote(self, n: int, now: float) -> None:
        if self.t0 is None:
            self.t0, self.frames = now, 0
        self.frames += n

    def sync(self, queued: int, now: float) -> None:
        """The device says `queued` frames are still to play: trust it over our clock."""
        self.t0 = now - (self.frames - queued) / self.rate

    def reset(self) -> None:
        self.t0, self.frames, self.paused_at = None, 0, None


class AlsaSink(Sink):
    type = "alsa"
    Settings = AlsaSettings
    realtime = True
    audible = True

    def __init__(self, settings: AlsaSettings, ctx) -> None:
        super().__init__(settings, ctx)
        self._pcm: Any = None
        self._info: dict[str, Any] = {}
        self._limiter = anyio.CapacityLimiter(1)  # one thread at a time touches the PCM
        self._clock = _Clock()
        self._backoff = Backoff(
            base=settings.retry_s, step=2 * settings.retry_s, cap=settings.retry_max_s,
            jitter=min(3.0, settings.retry_s),
        )  # fmt: skip
        self._next_try = 0.0
        self._down_detail = ""
        self._paused = False
        self._hw_paused = False
        self._resumed = anyio.Event()
        self._resumed.set()

    # -- device ----------------------------------------------------------------------------

    async def start(self) -> None:
        if alsaaudio is None:
            self.set_state("failed", "pyalsaaudio is not installed", error=_IMPORT_ERROR)
            raise RuntimeError(f"pyalsaaudio is not installed ({_IMPORT_ERROR}); see docs/sinks.md")
        # open now when the rate is known; else only check that the device opens, and open it
        # for good at the first utterance, at the engine's rate
        if self.settings.rate is not None:
            ok = await self._ensure_open(self.settings.rate)
        else:
            ok = await self._ensure_open(48000)
            await self._close_pcm()
        if not ok:
            raise RuntimeError(self.detail)

    async def _ensure_open(self, rate: int) -> bool:
        if self._pcm is not None:
            return True
        now = time.monotonic()
        if now < self._next_try:
            self.set_state("unavailable", self._down_detail)  # the speaker may have marked it ok
            return False
        try:
            pcm, info = await anyio.to_thread.run_sync(self._open, rate, limiter=self._limiter)
        except Exception as e:
            delay = self._backoff.next_delay()
            self._next_try = time.monotonic() + delay
            self.counters["open_failures"] += 1
            msg = str(e)
            hint = (
                "another program holds it; stop it or use a dmix/pipewire device"
                if "busy" in msg.lower()
                else "check the name with `aplay -L` and that this user is in the audio group"
            )
            self._down_detail = f"cannot open ALSA device {self.settings.device!r}: {msg}; {hint}; retrying"
            self.set_state(
                "unavailable", f"cannot open ALSA device {self.settings.device!r}: {msg}; {hint}; retrying in {delay:.1f} s",
                error=f"{type(e).__name__}: {msg}",
            )  # fmt: skip
            self.log.warning("cannot open ALSA device %r: %s; retry in %.1f s", self.settings.device, msg, delay)
            return False
        self._pcm, self._info = pcm, info
        self._clock.reset()
        self._clock.rate = info["rate"]
        self._backoff.connected()
        self.set_state("ok", f"{self.settings.device}: {info['rate']} Hz, {info['channels']} ch, {info['format']}, "
                             f"buffer {info['buffer_ms']:.0f} ms")  # fmt: skip
        self.log.info("opened ALSA device %r %s", self.settings.device, info)
        return True

    def _open(self, rate: int) -> tuple[Any, dict[str, Any]]:
        s = self.settings
        want_rate = s.rate or rate
        period = max(16, round(want_rate * s.period_ms / 1000))
        last: Exception | None = None
        for fmt_name in _FORMATS:
            try:
                pcm = alsaaudio.PCM(
                    alsaaudio.PCM_PLAYBACK, alsaaudio.PCM_NONBLOCK, rate=want_rate, channels=s.channels or 1,
                    format=getattr(alsaaudio, "PCM_FORMAT_" + fmt_name), periodsize=period, periods=s.periods,
                    device=s.device,
                )  # fmt: skip
            except alsaaudio.ALSAAudioError as e:
                if "busy" in str(e).lower() or "no such" in str(e).lower():
                    raise
                last = e
                continue
            i = pcm.info()
            if i.get("format_name") not in _FORMATS:  # the device refused every format we write
                pcm.close()
                last = RuntimeError(f"the device only takes {i.get('format_name')}; use a plughw: device")
                continue
            info = {
                "rate": int(i["rate"]),
                "channels": int(i["channels"]),
                "format": i["format_name"],
                "period": int(i["period_size"]),
                "buffer": int(i["buffer_size"]),
            }
            info["buffer_ms"] = 1000 * info["buffer"] / info["rate"]
            return pcm, info
        raise last or RuntimeError("could not configure the device")

    async def _lost(self, e: Exception) -> None:
        """The device went away mid-stream (unplugged, suspended): close it, retry later."""
        self.counters["errors"] += 1
        await self._close_pcm()
        delay = self._backoff.next_delay()
        self._next_try = time.monotonic() + delay
        self._down_detail = f"ALSA device {self.settings.device!r} failed: {e}; retrying"
        self.set_state("unavailable", f"ALSA device {self.settings.device!r} failed: {e}; retrying in {delay:.1f} s",
                       error=f"{type(e).__name__}: {e}")  # fmt: skip

    async def _close_pcm(self) -> None:
        pcm, self._pcm = self._pcm, None
        self._clock.reset()
        self._hw_paused = False
        if pcm is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pcm.close, limiter=self._limiter)

    # -- playing ---------------------------------------------------------------------------

    async def play(self, pb: Playback) -> None:
        if not await self._ensure_open(pb.sample_rate):
            raise NotPlayed(self.detail or f"ALSA device {self.settings.device!r} is unavailable")
        info = self._info
        conv = _Converter(pb.sample_rate, info, self.settings.volume, self.settings.resample_quality)
        try:
            async for chunk in pb.chunks():
                if chunk.sample_rate != conv.in_rate:
                    conv = _Converter(chunk.sample_rate, info, self.settings.volume, self.settings.resample_quality)
                if not await self._write(conv.convert(chunk.samples)):
                    raise NotPlayed(self.detail or "the ALSA device went away mid-utterance")
            if not await self._write(conv.flush()):
                raise NotPlayed(self.detail or "the ALSA device went away mid-utterance")
        except BaseException:
            # skipped or cleared: silence now, not after what the card still holds
            with anyio.CancelScope(shield=True):
                await self._drop()
            raise

    async def _write(self, frames: np.ndarray) -> bool:
        """Write frames (shape n x channels), paced to at most one buffer ahead of the sound."""
        info = self._info
        rate = info["rate"]
        buffer_s = info["buffer"] / rate
        period_s = info["period"] / rate
        pos, n = 0, len(frames)
        while pos < n:
            if self._paused:
                await self._resumed.wait()
                continue
            if self._pcm is None:
                return False
            now = time.monotonic()
            room_s = buffer_s - self._clock.ahead(now)
            if room_s < min(period_s, (n - pos) / rate):
                await anyio.sleep(max(0.001, min(period_s, period_s - room_s)))
                continue
            take = min(n - pos, max(1, int(room_s * rate)))
            try:
                wrote, avail = await anyio.to_thread.run_sync(self._write_block, frames[pos : pos + take], limiter=self._limiter)
            except alsaaudio.ALSAAudioError as e:
                await self._lost(e)
                return False
            now = time.monotonic()
            if wrote > 0:
                pos += wrote
                self._clock.wrote(wrote, now)
                self.counters["frames"] += wrote
                if 0 <= avail < info["buffer"]:
                    self._clock.sync(info["buffer"] - avail, now)
            elif wrote == 0:  # the device's buffer is full: it paces us
                self._clock.sync(info["buffer"], now)
                await anyio.sleep(period_s / 2)
            elif wrote == -errno.EPIPE:  # underrun; pyalsaaudio re-prepared the stream
                if pos > 0:
                    self.counters["xruns"] += 1
                self._clock.reset()
        return True

    def _write_block(self, block: np.ndarray) -> tuple[int, int]:
        pcm = self._pcm
        if pcm is None:
            return -errno.ENODEV, 0
        wrote = pcm.write(block.tobytes())
        return wrote, pcm.avail()

    async def _drop(self) -> None:
        self._clock.reset()
        if self._pcm is None:
            return
        try:
            await anyio.to_thread.run_sync(self._drop_now, limiter=self._limiter)
            self.counters["drops"] += 1
        except Exception as e:
            await self._lost(e)

    def _drop_now(self) -> None:
        if self._hw_paused:
            self._pcm.pause(0)
            self._hw_paused = False
        self._pcm.drop()

    async def pause(self) -> None:
        if self._paused:
            return
        self._paused = True
        self._resumed = anyio.Event()
        self._clock.paused_at = time.monotonic()
        if self._pcm is not None:
            self._hw_paused = await anyio.to_thread.run_sync(self._pause_now, limiter=self._limiter)

    def _pause_now(self) -> bool:
        pcm = self._pcm
        if pcm is None or pcm.state() != alsaaudio.PCM_STATE_RUNNING:
            return False
        try:
            pcm.pause(1)
            return True
        except alsaaudio.ALSAAudioError:
            # the device cannot pause: drop what it holds (at most one buffer is lost)
            pcm.drop()
            self._clock.reset()
            return False

    async def resume(self) -> None:
        if not self._paused:
            return
        if self._clock.paused_at is not None and self._clock.t0 is not None:
            self._clock.t0 += time.monotonic() - self._clock.paused_at
        self._clock.paused_at = None
        if self._hw_paused and self._pcm is not None:
            try:
                await anyio.to_thread.run_sync(self._pcm.pause, 0, limiter=self._limiter)
            except alsaaudio.ALSAAudioError:
                await self._drop()
        self._hw_paused = False
        self._paused = False
        self._resumed.set()

    async def close(self) -> None:
        await self._close_pcm()

    def status(self) -> dict[str, Any]:
        st = super().status()
        st["device"] = self.settings.device
        if self._info:
            st["format"] = {k: self._info[k] for k in ("rate", "channels", "format")}
            st["buffer_ms"] = round(self._info["buffer_ms"], 1)
        return st


class _Converter:
    """Engine audio (float32 mono) to the device's rate, channels, sample format and volume."""

    def __init__(self, in_rate: int, info: dict[str, Any], volume: float, quality: str) -> None:
        self.in_rate = in_rate
        self.channels = info["channels"]
        self.dtype, self.scale = _FORMATS[info["format"]]
        self.volume = volume
        self.stream = None
        if in_rate != info["rate"]:
            import soxr

            self.stream = soxr.ResampleStream(in_rate, info["rate"], 1, dtype="float32", quality=quality)

    def convert(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32)
        if self.stream is not None:
            x = self.stream.resample_chunk(x, last=last)
        if self.volume != 1.0:
            x = x * self.volume
        x = np.clip(x, -1.0, 1.0)
        if self.dtype != "<f4":
            x = np.round(x.astype(np.float64) * self.scale)
        out = x.astype(self.dtype)
        return np.repeat(out[:, None], self.channels, axis=1) if self.channels > 1 else out[:, None]

    def flush(self) -> np.ndarray:
        if self.stream is None:
            return np.zeros((0, self.channels), dtype=self.dtype)
        return self.convert(np.zeros(0, dtype=np.float32), last=True)


@hookimpl
def ishowtts_register_sinks(register):
    register(AlsaSink)
