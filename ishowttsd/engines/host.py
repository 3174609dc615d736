"""Loads the configured engines (with the fallback), owns their one worker, maps voice ids, and
fails over: an engine that is unavailable at start or becomes so while speaking (it raises
`EngineUnavailable`) is replaced by the fallback until its `probe()` answers again."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Any, Iterator

import anyio
import anyio.lowlevel
import numpy as np

from ishowttsd.reconnect import Backoff
from ishowttsd.config import Config, ConfigError, validate_table
from ishowttsd.engines.base import Engine, EngineContext, EngineError, EngineUnavailable, Voice
from ishowttsd.events import EventBus
from ishowttsd.live_settings import LiveSettings
from ishowttsd.messages import AudioChunk

log = logging.getLogger("ishowttsd.engines")


class EngineHost:
    """The engines in use. All engine calls go through `limiter`: one worker owns the model."""

    def __init__(self, cfg: Config, registry: dict[str, type[Engine]], events: EventBus, live: LiveSettings | None = None) -> None:
        self.cfg = cfg
        self.live = live  # its default voice, chosen at run time, comes before [engine] default_voice
        self.registry = registry
        self.events = events
        self.limiter = anyio.CapacityLimiter(1)
        self.engines: dict[str, Engine] = {}
        self.errors: dict[str, str] = {}
        self.active: str | None = None  # the engine speaking by default
        self.fallback_reason: str | None = None
        self._voices: dict[str, tuple[str, Voice]] = {}
        self.voice_errors: dict[str, str] = {}
        # engines unavailable for now: {"since", "error", "probe_error"}; the fallback speaks for them
        self.down: dict[str, dict[str, Any]] = {}
        self._unloaded: dict[str, Engine] = {}  # unavailable at start: loaded once they answer
        self._guards: dict[str, _Guarded] = {}
        self._watching: set[str] = set()  # engines with a probe thread
        self._token: anyio.lowlevel.EventLoopToken | None = None
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
        """Load the default engine (or the fallback), warm it up, and prepare the voices. The
        fallback is loaded too, so that it can take over whenever another engine is unavailable."""
        self._token = anyio.lowlevel.current_token()
        default = self.cfg.engine.default
        fb = self.cfg.engine.fallback if self.cfg.engine.fallback != default else None
        wanted = [default]
        wanted += sorted({v.engine for v in self.cfg.voices if v.engine and v.engine not in wanted})
        if fb:  # first, so that it is there for any engine that turns out unavailable
            await self._load(fb)
        for name in wanted:
            await self._load(name)
        for name in wanted:
            for v in self.engines[name].voices() if name in self.engines else ():
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
            if default in self.down:
                why = f"{self.down[default]['error']}; retrying"
            else:
                why = self.errors.get(default, "not loaded")
            if fb and fb in self.engines:
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
        return await self._load_engine(name, engine)

    async def _load_engine(self, name: str, engine: Engine) -> bool:
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
        except EngineUnavailable as e:  # its config is fine: the fallback speaks until it answers
            self._unloaded[name] = engine
            self._mark_down(name, str(e))
            return False
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
            why = self.errors.get(name) or self.down.get(name, {}).get("error", "unknown")
            self.voice_errors[vc.id] = f"engine {name!r} is not loaded ({why})"
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

    def resolve(self, voice_id: str | None, options: dict[str, Any] | None = None) -> tuple[Engine, Voice]:
        """The engine and voice for an utterance (with its per-request `options`, checked by the
        engine's `Options`); an unknown id falls back to the default voice, a voice whose engine
        is unavailable to a voice of the fallback engine."""
        name, voice = self._lookup(voice_id)
        if name in self.down:
            taken = self._fallback_for(voice)
            if taken is None:
                raise EngineError(f"engine {name!r} is unavailable ({self.down[name]['error']}) and there is no working fallback")
            engine, voice = taken
        else:
            engine = self._guarded(name)
        if options:
            voice = voice.tuned(engine.Options.model_validate(options))
        return engine, voice

    @property
    def default_voice(self) -> str | None:
        """The voice an utterance without one speaks with: the one chosen live (`voices.default`)
        while it is known, else `[engine] default_voice`."""
        chosen = self.live.default_voice if self.live is not None else None
        if chosen and chosen in self._voices:
            return chosen
        return self.cfg.engine.default_voice

    def _lookup(self, voice_id: str | None) -> tuple[str, Voice]:
        if voice_id and voice_id in self._voices:
            return self._voices[voice_id]
        default = self.default_voice
        if default and default in self._voices:
            return self._voices[default]
        for name in (self.cfg.engine.default, self.active):  # the default's, even while it is down
            voices = self._voices_of(name)
            if voices:
                return name, voices[0]
        raise EngineError(f"engine {self.active!r} has no voice to speak with; add a [[voices]] entry")

    def _guarded(self, name: str) -> Engine:
        if name not in self._guards:
            self._guards[name] = _Guarded(self, self.engines[name])
        return self._guards[name]  # type: ignore[return-value]

    def _fallback_for(self, voice: Voice) -> tuple[Engine, Voice] | None:
        """The fallback engine and its voice nearest to `voice` (same language, else the default
        voice, else its first); None when there is no fallback that works. Thread-safe."""
        fb = self.cfg.engine.fallback
        if not fb or fb == voice.engine or fb not in self.engines or fb in self.down:
            return None
        voices = self.engines[fb].voices()
        if not voices:
            return None
        lang = (voice.language or "").split("-")[0]
        same = [v for v in voices if lang and (v.language or "").split("-")[0] == lang]
        dv = [v for v in voices if v.id == self.default_voice]
        return self._guarded(fb), (same or dv or voices)[0]

    # -- run-time failover ------------------------------------------------------------------------

    def _mark_down(self, name: str, error: str) -> None:
        """On the event loop: `name` is unavailable; route its voices to the fallback and start
        probing it."""
        if name in self.down:
            self.down[name]["error"] = error
            return
        self.down[name] = {"since": time.time(), "error": error, "probe_error": None}
        fb = self.cfg.engine.fallback
        fb = fb if fb and fb != name and fb in self.engines else None
        if name == self.active and fb:
            self.active, self.fallback_reason = fb, f"{name} is unavailable: {error}; retrying"
        self.events.publish("engine.down", engine=name, error=error, fallback=fb)
        if name not in self._watching:
            self._watching.add(name)
            engine = self.engines.get(name) or self._unloaded[name]
            threading.Thread(target=self._watch, args=(name, engine), name=f"probe-{name}", daemon=True).start()

    def _report_down(self, name: str, error: EngineUnavailable) -> None:
        """From a worker thread: `name` raised EngineUnavailable."""
        try:
            anyio.from_thread.run_sync(self._mark_down, name, str(error), token=self._token)
        except RuntimeError:  # the event loop is gone (shutting down): nothing left to route
            pass

    def _watch(self, name: str, engine: Engine) -> None:
        """A thread per unavailable engine: probe it, with growing pauses, until it answers."""
        retry = max(0.05, engine.retry_s)
        backoff = Backoff(base=retry, step=retry, cap=max(30.0, retry), jitter=retry / 5, healthy_after=0)
        while True:
            time.sleep(backoff.next_delay())
            try:
                engine.probe()
                error = None
            except Exception as e:
                error = str(e) if isinstance(e, EngineError) else f"{type(e).__name__}: {e}"
            try:
                if error is not None:
                    anyio.from_thread.run_sync(self._probe_failed, name, error, token=self._token)
                elif anyio.from_thread.run(self._revive, name, token=self._token):
                    return
            except RuntimeError:  # the event loop is gone: the daemon stopped
                return

    def _probe_failed(self, name: str, error: str) -> None:
        if name in self.down:
            self.down[name]["probe_error"] = error

    async def _revive(self, name: str) -> bool:
        """On the event loop, once `name` answered its probe: load it if it never loaded, give
        its voices back, and route to it again. True when the watch is over: it is back, or
        failed for good on its late load (a config error, reported as engine.failed)."""
        since = self.down.pop(name)["since"]
        engine = self._unloaded.pop(name, None)
        if engine is not None:
            if not await self._load_engine(name, engine):  # still unavailable: marked down again
                if name in self.down:
                    self.down[name]["since"] = since
                    return False
                self._watching.discard(name)
                return True
            for v in engine.voices():
                self._voices.setdefault(v.id, (name, v))
            for vc in self.cfg.voices:
                if (vc.engine or self.cfg.engine.default) == name:
                    await self.add_voice(vc)
        self._watching.discard(name)
        if name == self.cfg.engine.default and self.active != name and self._voices_of(name):
            self.active, self.fallback_reason = name, None
        self.events.publish("engine.back", engine=name, down_s=round(time.time() - since, 1))
        return True

    def has_voice(self, voice_id: str) -> bool:
        return voice_id in self._voices

    def engine_of(self, voice_id: str) -> str | None:
        """The engine a voice belongs to, or None for an unknown voice."""
        return self._voices[voice_id][0] if voice_id in self._voices else None

    def forget_voice(self, voice_id: str) -> None:
        """Stop offering a voice (an uploaded one that was removed); its utterances get the default."""
        self._voices.pop(voice_id, None)
        self.voice_errors.pop(voice_id, None)

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
            "down": {n: {**d, "since": round(d["since"], 3)} for n, d in self.down.items()},
            "checks": self.health_checks(),
        }

    def health_checks(self) -> list[dict[str, Any]]:
        """A check per unavailable engine, then every engine's own checks."""
        out = []
        for name, d in self.down.items():
            fb = self.cfg.engine.fallback if self.cfg.engine.fallback in self.engines else None
            probe = f"; last probe: {d['probe_error']}" if d["probe_error"] else ""
            out.append({
                "check": f"engine:{name}", "level": "warn",
                "reason": f"{name} unavailable for {time.time() - d['since']:.0f} s: {d['error']}{probe}; "
                          + (f"{fb} speaks meanwhile" if fb else "nothing speaks its voices meanwhile"),
                "fix": f"{name} is probed and taken back by itself once it answers; see its own checks for the cause",
            })  # fmt: skip
        for name, engine in [*self.engines.items(), *self._unloaded.items()]:
            try:
                out += engine.health_checks()
            except Exception as e:  # a broken check must not break `health`
                out.append({"check": f"engine:{name}", "level": "warn", "reason": f"its health check failed: {e}", "fix": ""})
        return out


class _Guarded:
    """An engine as `resolve` hands it out. When it raises EngineUnavailable the host marks it
    down and, if none of the utterance's audio had come out yet, the fallback speaks the same
    text at once, resampled to this engine's rate so that the utterance stays one stream. Audio
    already played cannot be taken back: then the utterance fails, and owed speech is retried
    (with the fallback, while this engine is down)."""

    def __init__(self, host: EngineHost, engine: Engine) -> None:
        self._host = host
        self._engine = engine

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._engine, attr)

    def synthesize(self, text: str, voice: Voice, cancel: threading.Event) -> Iterator[AudioChunk]:
        if self._engine.name not in self._host.down:
            it = self._engine.synthesize(text, voice, cancel)
            produced = False
            try:
                for chunk in it:
                    produced = True
                    yield chunk
                return
            except EngineUnavailable as e:
                self._host._report_down(self._engine.name, e)
                if produced or cancel.is_set():
                    raise
            finally:
                _close(it)
        taken = self._host._fallback_for(voice)
        if taken is None:
            raise EngineUnavailable(f"{self._engine.name} is unavailable ({self._host.down.get(self._engine.name, {}).get('error')}) "
                                    "and there is no working fallback")  # fmt: skip
        engine, fb_voice = taken
        # the utterance's tempo (live rate, per-request speed) carries over to the voice that stands in
        fb_voice = replace(fb_voice, speed=fb_voice.speed * voice.speed)
        it = engine.synthesize(text, fb_voice, cancel)
        try:
            yield from _at_rate(it, self._engine.sample_rate)
        finally:
            _close(it)

    def synthesize_batch(self, texts: list[str], voices: list[Voice], cancel) -> list[np.ndarray]:
        # on failure the speaker synthesizes the members one by one, through `synthesize` above
        try:
            return self._engine.synthesize_batch(texts, voices, cancel)
        except EngineUnavailable as e:
            self._host._report_down(self._engine.name, e)
            raise


def _at_rate(chunks: Iterator[AudioChunk], rate: int) -> Iterator[AudioChunk]:
    """`chunks` resampled to `rate` as one continuous stream (soxr keeps state across chunks)."""
    stream = None
    for c in chunks:
        if c.sample_rate == rate and stream is None:
            yield c
            continue
        if stream is None:
            import soxr

            stream = soxr.ResampleStream(c.sample_rate, rate, 1, dtype="float32")
        out = stream.resample_chunk(np.asarray(c.samples, dtype=np.float32))
        if len(out):
            yield AudioChunk(out, rate)
    if stream is not None:
        tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
        if len(tail):
            yield AudioChunk(tail, rate)


def _close(it) -> None:
    close = getattr(it, "close", None)
    if close:
        close()
