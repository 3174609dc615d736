"""Sound a streamer adjusts while live: a master volume, a volume per sink, the speech rate and
the default voice. Changed through the control API (`volume`, `rate`, `voices.default`), they
take effect from the next audio chunk (volume) or the next utterance (rate, voice) and are kept
across restarts in a small JSON file in the state folder, written atomically.

A file that cannot be read as settings (half-written by hand, from a newer version) is moved
aside with a log line and the defaults are used: the daemon never refuses to start over it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("ishowttsd.live")

FILE_NAME = "live.json"
MAX_VOLUME = 150  # percent; above 100 amplifies (and clips the loudest peaks)
MIN_RATE, MAX_RATE = 0.5, 2.0


class LiveFile(BaseModel):
    """What `live.json` holds; anything else in it makes it corrupt."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    version: int = 1
    master: int = Field(default=100, ge=0, le=MAX_VOLUME)
    sinks: dict[str, Annotated[int, Field(ge=0, le=MAX_VOLUME)]] = Field(default_factory=dict)
    rate: float = Field(default=1.0, ge=MIN_RATE, le=MAX_RATE)
    default_voice: str | None = Field(default=None, min_length=1, max_length=200)


def apply_gain(samples: np.ndarray, gain: float) -> np.ndarray:
    """`samples` (float32 in [-1, 1]) scaled by `gain`, clipped to [-1, 1] so that the 16-bit
    PCM every sink writes cannot wrap around: 0 is silence, above 1 amplifies and clips."""
    if gain == 1.0:
        return samples
    if gain <= 0.0:
        return np.zeros_like(samples, dtype=np.float32)
    out = np.multiply(samples, np.float32(gain), dtype=np.float32)
    if gain > 1.0:
        np.clip(out, -1.0, 1.0, out=out)
    return out


class LiveSettings:
    """The live sound settings and their file. Not thread-safe: used on the event loop only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.data = LiveFile()
        self.problem: str | None = None  # the last read or write failure, with advice
        self.moved_to: str | None = None  # where a corrupt file was put

    # -- the file ------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file; a missing one means defaults, a corrupt one is moved aside."""
        if self.path is None:
            return
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as e:
            self.problem = f"cannot read {self.path} ({e.strerror}); the defaults are used. Check the state folder's permissions"
            log.warning("%s", self.problem)
            return
        try:
            self.data = LiveFile.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
            why = str(e).splitlines()[0] if not isinstance(e, ValidationError) else f"{e.error_count()} bad value(s)"
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
            try:
                os.replace(self.path, aside)
                self.moved_to = str(aside)
            except OSError:
                aside = None
            self.data = LiveFile()
            self.problem = (f"{self.path} was not a live settings file ({why}); "
                            + (f"moved aside to {aside}; " if aside else "") + "volume, rate and default voice are the defaults")
            log.warning("%s", self.problem)

    def snapshot(self) -> str:
        """The file's text for the settings now (taken on the event loop; `write` may run in a thread)."""
        return self.data.model_dump_json(indent=1) + "\n"

    def save(self) -> bool:
        return self.write(self.snapshot())

    def write(self, text: str) -> bool:
        """Write the file atomically (a crash leaves the old file or the new one, never half).
        False (and `problem` says why) when it cannot be written: the change still holds for this run."""
        if self.path is None:
            return False
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as e:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            self.problem = (f"cannot write {self.path} ({e.strerror}): the change holds until a restart only. "
                            "Check that the state folder is writable and has free space")  # fmt: skip
            log.warning("%s", self.problem)
            return False
        self.problem = None
        return True

    # -- the settings --------------------------------------------------------------------------

    @property
    def master(self) -> int:
        return self.data.master

    @property
    def rate(self) -> float:
        return self.data.rate

    @property
    def default_voice(self) -> str | None:
        return self.data.default_voice

    def sink_volume(self, sink: str) -> int:
        return self.data.sinks.get(sink, 100)

    def gain(self, sink: str) -> float:
        """The factor a sink's audio is scaled by now: master x the sink's own volume."""
        return self.data.master / 100.0 * self.sink_volume(sink) / 100.0

    def set_volume(self, sink: str | None, percent: int) -> int:
        """Set the master volume (sink None) or a sink's; returns the old value."""
        if sink is None:
            was, self.data.master = self.data.master, percent
        else:
            was = self.sink_volume(sink)
            if percent == 100:
                self.data.sinks.pop(sink, None)
            else:
                self.data.sinks[sink] = percent
        return was

    def set_rate(self, rate: float) -> float:
        was, self.data.rate = self.data.rate, rate
        return was

    def set_default_voice(self, voice: str | None) -> str | None:
        was, self.data.default_voice = self.data.default_voice, voice
        return was

    def status(self, sinks: list[str]) -> dict[str, Any]:
        """For `status` and the `sound` verb: every sink's volume is shown, 100 included."""
        return {
            "master": self.data.master,
            "sinks": {name: self.sink_volume(name) for name in sinks},
            "rate": self.data.rate,
            "default_voice": self.data.default_voice,
            "file": str(self.path) if self.path else None,
            "problem": self.problem,
        }
