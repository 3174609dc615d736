"""Loads the configured engines (with the fallback), owns their one worker, maps voice ids."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio

from ishowttsd.config import Config, ConfigError, validate_table
from ishowttsd.engines.base import Engine, EngineContext, EngineError, Voice
from ishowttsd.events import EventBus

log = logging.getLogger("ishowttsd.engines")


class EngineHost:
    """The engines in use. All engine calls go through `limiter`: one worker owns the model."""

    def __init__(self, cfg: Config, registry: dict[str, type[Engine]], events: EventBus) -> None:
        self.cfg = cfg
        self.registry = registry
        self.events = events
        self.limiter = anyio.CapacityLimiter(1)
        self.engines: dict[str, Engine] = {}
        self.errors: dict[str, str] = {}
        self.active: str | None = None  # the engine speaking by default
        self.fallback_reason: str | None = None
        self._voices: dict[str, tuple[str, Voice]] = {}
        self.voice_errors: dict[str, str] = {}
        self._check_config()

    def _check_config(self) -> None:
        names = set(self.registry)
        ec = self.cfg.engine
        for key, what in ((ec.default, "engine.default"), (ec.fallback, "engine.fallback")):
            if key and key not in names:
                raise ConfigError(f"{self._where()}: {what}: unknown engine {key!r}; known: {sorted(names)}")
        for name, table in ec.engine_tables().items():
            if name not in names:
                raise ConfigError(f"{self._where()}: engine.{name}: unknown engine; known: {sorted(names)}")
            if not isinstance(table, dict):
                raise ConfigError(f"{self._where()}: engine.{name}: must be a table ([engine.{name}])")
            validate_table(self.registry[name].Settings, table, f"engine.{name}", self.cfg.path)
        for i, v in enumerate(self.cfg.voices):
            if v.engine and v.engine not in names:
                raise ConfigError(f"{self._where()}: voices[{i}].engine: unknown engine {v.engine!r}; known: {sorted(names)}")

    def _where(self) -> str:
        return str(self.cfg.path) if self.cfg.path else "config"

    def _make(self, name: str) -> Engine:
        cls = self.registry[name]
        table = self.cfg.engine.engine_tables().get(name, {})
        settings = validate_table(cls.Settings, table, f"engine.{name}", self.cfg.path)
        return cls(settings, EngineContext(config=self.cfg, state_dir=self.cfg.state_dir()))

    async def start(self) -> None:
        """Load the default engine (or the fallback), warm it up, and prepare the voices."""
        default = self.cfg.engine.default
        wanted = [default]
        wanted += sorted({v.engine for v in self.cfg.voices if v.engine and v.engine not in wanted})
        for name in wanted:
            await self._load(name)
        for name, engine in self.engines.items():
            for v in engine.voices():
                self._voices.setdefault(v.id, (name, v))
        for vc in self.cfg.voices:
            await self.add_voice(vc)
        if default in self.engines and not self._voices_of(default):
            # an engine with nothing to speak with (F5 with no [[voices]]) is as good as not loaded
            self.errors[default] = (
                f"{default} has no usable voice; add a [[voices]] entry with engine = \"{default}\", "
                f"reference_audio and reference_text" + self._voice_errors_hint()
            )
            self.events.publish("engine.failed", engine=default, error=self.errors[default])
        if default in self.engines and default not in self.errors:
            self.active = default
        else:
            fb = self.cfg.engine.fallback
            why = self.errors.get(default, "not loaded")
            if fb and fb != default and await self._load(fb):
                for v in self.engines[fb].voices():
                    self._voices.setdefault(v.id, (fb, v))
                self.active = fb
                self.fallback_reason = f"{default} failed: {why}"
                self.events.publish("engine.fallback", engine=fb, reason=self.fallback_reason)
            else:
                raise EngineError(f"engine {default!r} could not load ({why}) and there is no working fallback")
        dv = self.cfg.engine.default_voice
        if dv and dv not in self._voices:
            if dv in self.voice_errors or any(vc.id == dv for vc in self.cfg.voices):
                # configured but its engine or reference failed: speak with the active engine, say why
                self.events.publish("voice.fallback", voice=dv, engine=self.active,
                                    reason=self.voice_errors.get(dv, "its engine is not loaded"))  # fmt: skip
            else:
                raise ConfigError(f"{self._where()}: engine.default_voice: no voice {dv!r}; known: {sorted(self._voices)}")

    def _voices_of(self, name: str) -> list[Voice]:
        return [v for n, v in self._voices.values() if n == name]

    def _voice_errors_hint(self) -> str:
        if not self.voice_errors:
            return ""
        return " (" + "; ".join(f"voice {k!r}: {v}" for k, v in self.voice_errors.items()) + ")"

    async def _load(self, name: str) -> bool:
        if name in self.engines:
            return True
        try:
            engine = self._make(name)
        except ConfigError as e:
            self.errors[name] = str(e)
            return False

        def progress(stage: str, fraction: float | None) -> None:
            fields: dict[str, Any] = {"engine": name, "stage": stage}
            if fraction is not None:
                fields["progress"] = round(fraction, 3)
            anyio.from_thread.run_sync(lambda: self.events.publish("engine.progress", **fields))

        t0 = time.perf_counter()
        try:
            await anyio.to_thread.run_sync(engine.load, progress, limiter=self.limiter)
            if self.cfg.engine.warmup:
                await anyio.to_thread.run_sync(engine.warmup, progress, limiter=self.limiter)
        except Exception as e:  # any engine failure becomes a reported fallback, never a crash
            self.errors[name] = f"{type(e).__name__}: {e}" if not isinstance(e, EngineError) else str(e)
            self.events.publish("engine.failed", engine=name, error=self.errors[name])
            return False
        self.engines[name] = engine
        self.events.publish("engine.ready", engine=name, load_s=round(time.perf_counter() - t0, 3))
        return True

    async def add_voice(self, vc) -> Voice | None:
        """Add or reload a `[[voices]]` entry; errors are recorded per voice, never fatal."""
        name = vc.engine or self.cfg.engine.default
        if name not in self.engines:
            self.voice_errors[vc.id] = f"engine {name!r} is not loaded ({self.errors.get(name, 'unknown')})"
            return None
        voice = Voice(
            id=vc.id,
            engine=name,
            language=vc.language or "",
            reference_audio=str(self.cfg.resolve(vc.reference_audio)) if vc.reference_audio else None,
            reference_text=vc.reference_text,
            speed=vc.speed,
            options=dict(vc.options),
        )
        try:
            voice = await anyio.to_thread.run_sync(self.engines[name].add_voice, voice, limiter=self.limiter)
        except Exception as e:
            self.voice_errors[vc.id] = str(e)
            self.events.publish("voice.failed", voice=vc.id, error=str(e))
            return None
        self.voice_errors.pop(vc.id, None)
        self._voices[voice.id] = (name, voice)
        return voice

    def resolve(self, voice_id: str | None) -> tuple[Engine, Voice]:
        """The engine and voice for an utterance; an unknown id falls back to the default voice."""
        if voice_id and voice_id in self._voices:
            name, voice = self._voices[voice_id]
            return self.engines[name], voice
        default = self.cfg.engine.default_voice
        if default and default in self._voices:
            name, voice = self._voices[default]
            return self.engines[name], voice
        voices = self._voices_of(self.active)
        if not voices:
            raise EngineError(f"engine {self.active!r} has no voice to speak with; add a [[voices]] entry")
        return self.engines[self.active], voices[0]

    def has_voice(self, voice_id: str) -> bool:
        return voice_id in self._voices

    def voices(self) -> list[dict[str, Any]]:
        out = []
        for vid, (name, v) in self._voices.items():
            d = v.to_dict()
            d["active"] = name == self.active
            out.append(d)
        for vid, err in self.voice_errors.items():
            out.append({"id": vid, "engine": None, "error": err})
        return out

    def status(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "configured": self.cfg.engine.default,
            "fallback_reason": self.fallback_reason,
            "engines": {n: e.info() for n, e in self.engines.items()},
            "errors": dict(self.errors),
        }
