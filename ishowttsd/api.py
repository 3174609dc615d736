"""Every control verb, implemented once: the one API behind every front door.

The control socket (`control.py`) and the HTTP server are thin transports over :class:`Api`:
each verb has one implementation, one parameter schema (a pydantic model: unknown keys,
wrong types and non-finite numbers are refused) and one error vocabulary (:data:`ERRORS`).
The API is handed the parts it needs, never the daemon.
"""

from __future__ import annotations

import base64
import inspect
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ishowttsd import __version__
from ishowttsd.audio import encode, wav_from_pcm16
from ishowttsd.config import Config, ConfigError, load_config, validate_table
from ishowttsd.direct import DirectRefused
from ishowttsd.events import catalogue
from ishowttsd.messages import Kind, Message, Priority, User, Utterance
from ishowttsd.voicestore import UploadRefused, check_upload

# The error vocabulary: every error any front door answers has one of these codes.
ERRORS: dict[str, str] = {
    "parse_error": "the request is not valid JSON",
    "invalid_request": "the request is not a {method, params} object",
    "line_too_long": "the request is longer than the transport allows",
    "method_not_found": "no such verb",
    "invalid_params": "a parameter is missing, unknown, or of the wrong type or range",
    "not_found": "the thing named does not exist (an utterance id, ...)",
    "unknown_voice": "no voice with that id",
    "not_ready": "the engine is still loading",
    "busy": "the daemon is doing this already, or has no room for another client",
    "config_error": "the config file was refused; the old one stays in force",
    "bench_failed": "the benchmark could not run",
    "baseline_not_saved": "the benchmark ran but its baseline could not be written",
    "too_large": "a text, transcript or upload is over its configured bound",
    "bad_audio": "an uploaded file is not a usable recording",
    "voice_failed": "the engine could not prepare a voice from the recording",
    "rate_limited": "too many requests; retry after the time given",
    "unauthorized": "no valid token, session or login code (HTTP only)",
    "forbidden": "the credential, Host or Origin may not do this (HTTP only)",
    "internal_error": "a bug: the message says what failed",
}


HEALTH_SAMPLE_REUSE_S = 2.0  # `health` judges on a hardware sample at most this old


class ApiError(Exception):
    """An error answered to the client: a code from :data:`ERRORS` and advice in the message."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, for `busy` and `rate_limited`


class Params(BaseModel):
    """Base for a verb's parameters: unknown keys are errors, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoParams(Params):
    pass


class SayParams(Params):
    text: str = Field(min_length=1, max_length=2000)
    voice: str | None = Field(default=None, max_length=200)
    priority: str = "urgent"
    options: dict[str, Any] = Field(default_factory=dict, description="engine options: speed; F5 steps, cfg_strength, seed")


class InjectUser(Params):
    """The user of an injected message: the same fields as a platform's user."""

    id: str = Field(default="", max_length=200)
    name: str = Field(default="", max_length=200)
    level: int = Field(default=0, ge=0, le=10_000)
    medal_name: str = Field(default="", max_length=200)
    medal_level: int = Field(default=0, ge=0, le=10_000)
    membership: str = Field(default="", max_length=200)
    moderator: bool = False
    broadcaster: bool = False
    vip: bool = False


class InjectParams(Params):
    platform: str = Field(default="inject", min_length=1, max_length=64)
    kind: str = "danmaku"
    user: str | InjectUser = "tester"
    text: str = Field(default="", max_length=2000)
    amount: float | None = Field(default=None, ge=0, le=1e9)
    currency: str | None = Field(default=None, max_length=16)
    id: str = Field(default="", max_length=200)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("user")
    @classmethod
    def _name(cls, v: str | InjectUser) -> str | InjectUser:
        if isinstance(v, str) and len(v) > 200:
            raise ValueError("a user name is at most 200 characters")
        return v


class SelectParams(Params):
    """Which utterances: one id, or everything matching the given fields (at least one)."""

    id: int | None = Field(default=None, ge=0)
    user: str | None = Field(default=None, min_length=1, max_length=200, description="a user's name or id")
    platform: str | None = Field(default=None, max_length=64)
    classes: list[str] | None = None

    @model_validator(mode="after")
    def _something(self) -> SelectParams:
        if self.id is None and self.user is None and self.platform is None and self.classes is None:
            raise ValueError("name what to remove: id, user, platform or classes")
        return self


class ClearParams(Params):
    classes: list[str] | None = None


class VoicesReloadParams(Params):
    id: str | None = None  # only this voice; default: every [[voices]] entry


class WatchParams(Params):
    events: list[str] | None = Field(default=None, description="only these events (see the `events` verb)")


class BenchParams(Params):
    runs: int = Field(default=3, ge=1, le=50)
    voice: str | None = None
    texts: list[str] | None = Field(default=None, min_length=1, max_length=20)
    save_baseline: bool = False


class SourceParams(Params):
    name: str = Field(min_length=1, max_length=200, description="the source's name (see `status`)")


class SourceAddParams(Params):
    type: str = Field(min_length=1, max_length=64, description="bilibili, twitch, ...")
    settings: dict[str, Any] = Field(default_factory=dict, description='its table\'s keys: {"room_id": 123} or {"channel": "name"}; '
                                     "a room's or channel's address works too; without a name it is named TYPE-ROOM")


class VoiceIdParams(Params):
    id: str = Field(min_length=1, max_length=200)


class VoiceUploadParams(VoiceIdParams):
    transcript: str = Field(max_length=1_000_000, description="what the recording says")
    audio_b64: str = Field(min_length=1, description="the recording (WAV, FLAC, Ogg or MP3), base64")
    engine: str | None = Field(default=None, max_length=64, description="default: the voice's engine, else the active one")
    language: str | None = Field(default=None, max_length=32)


AudioFormat = Literal["wav", "pcm", "flac", "mp3", "opus"]


class PreviewParams(VoiceIdParams):
    text: str | None = Field(default=None, min_length=1, max_length=500)
    format: AudioFormat = "wav"


class SynthesizeParams(Params):
    text: str = Field(min_length=1, max_length=1_000_000)  # the real bound: [web] speech_max_chars
    voice: str | None = Field(default=None, max_length=200)
    format: AudioFormat = "wav"
    options: dict[str, Any] = Field(default_factory=dict, description="engine options: speed; F5 steps, cfg_strength, seed")


class VolumeParams(Params):
    percent: int = Field(ge=0, le=150, description="0 is silence, 100 as synthesized, above 100 amplifies (loud peaks clip)")
    sink: str | None = Field(default=None, min_length=1, max_length=200,
                             description="a sink's name (see `status`); default: the master volume, over every sink")  # fmt: skip


class RateParams(Params):
    rate: float = Field(ge=0.5, le=2.0, description="speech rate for every utterance: 1 is the voices' own speed")


class DefaultVoiceParams(Params):
    id: str | None = Field(default=None, min_length=1, max_length=200,
                           description="a voice id (see `voices`); null: back to [engine] default_voice")  # fmt: skip


class HistoryParams(Params):
    limit: int = Field(default=1000, ge=1, le=10_000)


class HistoryAudioParams(Params):
    id: int = Field(ge=0)


@dataclass
class Runtime:
    """What the daemon is as a process: its state and where it listens."""

    socket: str
    config: str | None
    state: str = "starting"  # starting, running, stopping
    started: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True)
class Verb:
    name: str
    handler: Callable[..., Awaitable[Any]]
    params: type[Params]
    doc: str
    stream: bool = False  # answers (snapshot, async iterator of events)
    mutates: bool = False  # changes state (an HTTP front door refuses it from a foreign Origin)


def verb(name: str, params: type[Params] = NoParams, *, stream: bool = False, mutates: bool = False):
    """Mark an Api method as the control verb `name`; its docstring documents it."""

    def mark(fn):
        fn._verb = (name, params, stream, mutates)
        return fn

    return mark


class Api:
    """The control verbs over the daemon's parts. See each verb's docstring."""

    def __init__(self, *, config: Config, runtime: Runtime, events, queue, speaker, engines, health, hardware,
                 plugins, sources: list, sinks: list, intake, paid, reload: Callable[[], dict[str, Any]],
                 lineup=None, history=None, voicestore=None, direct=None, web=None, live=None) -> None:  # fmt: skip
        self.cfg = config
        self.runtime = runtime
        self.events = events
        self.queue = queue
        self.speaker = speaker
        self.engines = engines
        self.health_monitor = health
        self.hardware = hardware
        self.plugins = plugins
        self.sources = sources
        self.sinks = sinks
        self.intake = intake
        self.paid = paid
        self._reload = reload
        # the control room's parts (see the section "verbs: the control room")
        self.lineup = lineup
        self.history = history
        self.voicestore = voicestore
        self.direct = direct
        self.web = web
        self.live = live  # volumes, rate and default voice changed at run time (live_settings.py)
        self._bench_lock = anyio.Lock()
        self._live_lock = anyio.Lock()
        # one fresh hardware sample serves every `health` asked for meanwhile (twenty open pages
        # polling it would otherwise walk the process table twenty times at once)
        self._health_sample: anyio.Event | None = None
        self._health_sampled_at = -HEALTH_SAMPLE_REUSE_S
        self.verbs: dict[str, Verb] = {}
        for attr in dir(type(self)):
            fn = getattr(type(self), attr)
            spec = getattr(fn, "_verb", None)
            if spec:
                name, params, stream, mutates = spec
                doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
                self.verbs[name] = Verb(name, getattr(self, attr), params, doc, stream, mutates)

    async def call(self, name: str, raw: Any) -> Any:
        """Validate `raw` against the verb's schema and run it. Raises ApiError."""
        v = self.verbs.get(name)
        if v is None:
            raise ApiError("method_not_found", f"no method {name!r}; known: {sorted(self.verbs)}")
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ApiError("invalid_params", "params must be an object")
        try:
            params = v.params.model_validate(raw)
        except ValidationError as e:
            raise ApiError("invalid_params", validation_message(e)) from None
        return await v.handler(params)

    # -- reports --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        c = self.events.counts
        return {k: c.get(k, 0) for k in ("received", "filtered", "merged", "queued", "dropped", "expired", "spoken", "failed", "cut")}

    def status(self) -> dict[str, Any]:
        rt = self.runtime
        return {
            "version": __version__,
            "state": rt.state,
            "pid": rt.pid,
            "uptime_s": round(time.time() - rt.started, 1),
            "socket": rt.socket,
            "config": rt.config,
            "counts": self.counts(),
            "events": dict(self.events.counts),
            "reasons": dict(self.events.reasons),
            "moderation": self.intake.moderator.status(),
            "queue": self.queue.stats(),
            "journal": self.paid.status(),
            "chat": self.intake.status(),  # chat commands (mutes, refusals) and greetings
            "speaker": self.speaker.status(),
            "engine": self.engines.status(),
            "sources": [s.status() for s in self.sources],
            "sinks": [s.status() for s in self.sinks],
            "plugins": {"loaded": sum(1 for r in self.plugins.records if r.state == "loaded"),
                        "broken": [r.to_dict() for r in self.plugins.broken]},
            "hardware": self.hardware.snapshot(),
            "web": self.web.status() if self.web is not None else {"enabled": False},
            "sound": self.sound(),
        }  # fmt: skip

    def sound(self) -> dict[str, Any]:
        """The live sound: master and per-sink volume, rate, default voice (chosen, config, in use)."""
        if self.live is None:
            return {"enabled": False}
        st = self.live.status([s.name for s in self.sinks])
        chosen = st.pop("default_voice")
        st["default_voice"] = self.engines.default_voice
        st["default_voice_chosen"] = chosen
        st["default_voice_config"] = self.cfg.engine.default_voice
        notes = []
        if chosen and self.engines.active is not None and not self.engines.has_voice(chosen):
            instead = repr(self.engines.default_voice) if self.engines.default_voice else "the engine's first voice"
            notes.append(f"the chosen default voice {chosen!r} is not available now; {instead} speaks instead")
        if chosen and self.cfg.moderation.kind_voices:
            notes.append(f"[moderation] kind_voices ({', '.join(sorted(self.cfg.moderation.kind_voices))}) and user_voices "
                         "still pick their own voices; this default applies to the rest")  # fmt: skip
        st["notes"] = notes
        return st

    def summary(self) -> dict[str, Any]:
        """What a run did, for `--summary` and scripts."""
        rtfs = list(self.speaker.rtfs)
        return {
            **self.counts(),
            "reasons": dict(self.events.reasons),
            "rtf_median": round(statistics.median(rtfs), 4) if rtfs else None,
            "rtf_min": round(min(rtfs), 4) if rtfs else None,
            "rtf_max": round(max(rtfs), 4) if rtfs else None,
            "engine": self.engines.active,
        }

    # -- verbs: looking ------------------------------------------------------------------------

    @verb("status")
    async def v_status(self, _: NoParams) -> dict:
        """State, counters, engine, queue, journal, sources, sinks, plugins and hardware."""
        return self.status()

    @verb("health")
    async def v_health(self, _: NoParams) -> dict:
        """The self-checks, each ok / warn / fail with a reason and a fix, on a fresh hardware sample."""
        await self._fresh_hardware_sample()
        return self.health_monitor.report()

    async def _fresh_hardware_sample(self) -> None:
        """A hardware sample at most HEALTH_SAMPLE_REUSE_S old; one at a time, shared by every caller."""
        if time.monotonic() - self._health_sampled_at < HEALTH_SAMPLE_REUSE_S:
            return
        if self._health_sample is not None:  # one is being taken: wait for it
            await self._health_sample.wait()
            return
        done = self._health_sample = anyio.Event()
        try:
            await anyio.to_thread.run_sync(self.hardware.sample_for_health)
            self._health_sampled_at = time.monotonic()
        finally:
            self._health_sample = None
            done.set()

    @verb("summary")
    async def v_summary(self, _: NoParams) -> dict:
        """Counts, reasons and RTF of this run."""
        return self.summary()

    @verb("metrics")
    async def v_metrics(self, _: NoParams) -> dict:
        """Prometheus text exposition of status, health and RTF."""
        from ishowttsd.metrics import render

        return {"text": render(self.status(), self.health_monitor.report(), self.health_monitor.rtf_report())}

    @verb("queue")
    async def v_queue(self, _: NoParams) -> dict:
        """What is speaking, prepared and waiting, in the order it will be said."""
        sp = self.speaker.status()
        return {
            "speaking": sp.get("speaking"),
            "prepared": sp.get("prepared", []),
            "pending": [u.summary() for u in self.queue.pending()],
            "paused": sp.get("paused", False),
        }

    @verb("voices")
    async def v_voices(self, _: NoParams) -> dict:
        """The voices, with their engine and any error; per engine, whether it clones and its options."""
        engines = self._ready_engines()
        voices = engines.voices()
        configured = {vc.id for vc in self.cfg.voices}
        for v in voices:
            v["uploaded"] = bool(self.voicestore and self.voicestore.has(v["id"]))
            v["configured"] = v["id"] in configured
        kinds = {n: {"clones": e.clones, "options": e.Options.fields()} for n, e in engines.engines.items()}
        return {"voices": voices, "default": engines.default_voice, "engines": kinds}

    @verb("plugins")
    async def v_plugins(self, _: NoParams) -> dict:
        """Loaded, broken and refused plugins, and what they provide."""
        return {
            "plugins": self.plugins.summary(),
            "sources": sorted(self.plugins.sources),
            "sinks": sorted(self.plugins.sinks),
            "engines": sorted(self.plugins.engines),
        }

    @verb("events")
    async def v_events(self, _: NoParams) -> dict:
        """The event catalogue: every event's name, meaning and fields."""
        return {"events": catalogue()}

    @verb("events.watch", WatchParams, stream=True)
    async def v_watch(self, p: WatchParams):
        """A status snapshot, then every event (or only those named) until the client hangs up."""
        wanted = None
        if p.events is not None:
            known = {e["event"] for e in catalogue()}
            unknown = sorted(set(p.events) - known)
            if unknown:
                raise ApiError("invalid_params", f"events: unknown event(s) {unknown}; list them with `ishowttsctl events`")
            wanted = set(p.events)
        sub = self.events.subscribe(wanted)

        async def stream() -> AsyncIterator[dict]:
            with sub:
                while True:
                    yield await sub.receive()

        return {"status": self.status()}, stream()

    # -- verbs: speaking -----------------------------------------------------------------------

    @verb("say", SayParams, mutates=True)
    async def v_say(self, p: SayParams) -> dict:
        """Speak a text now, as the operator: no moderation, class `urgent` unless told otherwise."""
        prio = _priority(p.priority, "priority")
        if p.voice is not None and not self._ready_engines().has_voice(p.voice):
            raise ApiError("unknown_voice", f"no voice {p.voice!r}; list them with `ishowttsctl voices`")
        text = p.text.strip()
        if not text:
            raise ApiError("invalid_params", "text: nothing to say (only spaces)")
        options = self._options(p.voice, p.options)
        utt = Utterance(text=text, priority=prio, voice=p.voice, source="control", deadline=self.intake.deadline(prio),
                        options=options)  # fmt: skip
        dropped = self.paid.admit(utt)
        return {"queued": utt.id not in {d.id for d in dropped}, "id": utt.id}

    @verb("inject", InjectParams, mutates=True)
    async def v_inject(self, p: InjectParams) -> dict:
        """A message as if a platform sent it, through moderation (to test filters and templates)."""
        try:
            kind = Kind(p.kind)
        except ValueError:
            raise ApiError("invalid_params", f"kind: unknown kind {p.kind!r}; use one of {[k.value for k in Kind]}") from None
        user = User(name=p.user) if isinstance(p.user, str) else User(**p.user.model_dump())
        m = Message(platform=p.platform, kind=kind, text=p.text, user=user, amount=p.amount,
                    currency=p.currency, id=p.id, extra=p.extra)  # fmt: skip
        result = self.intake.message(None, m)
        if not isinstance(result, Utterance):
            return {"accepted": False, "reason": result.reason, "detail": result.detail}
        return {"accepted": True, "id": result.id, "text": result.text, "priority": result.priority.name.lower()}

    @verb("queue.remove", SelectParams, mutates=True)
    async def v_remove(self, p: SelectParams) -> dict:
        """Take utterances back, waiting or speaking: one id, or a user's, a platform's or classes'."""
        classes = None if p.classes is None else {_priority(c, "classes") for c in p.classes}

        def match(u: Utterance) -> bool:
            m = u.message
            if p.id is not None and u.id != p.id:
                return False
            if p.user is not None and not (m and p.user.casefold() in (m.user.name.casefold(), m.user.id.casefold())):
                return False
            if p.platform is not None and not (m and m.platform == p.platform):
                return False
            return classes is None or u.priority in classes

        removed, cut = self.speaker.take_back(match, "removed")
        if p.id is not None and not removed and not cut:
            raise ApiError("not_found", f"no utterance {p.id} is waiting or speaking; see `ishowttsctl queue`")
        return {"removed": [u.id for u in removed], "cut": [u.id for u in cut]}

    @verb("clear", ClearParams, mutates=True)
    async def v_clear(self, p: ClearParams) -> dict:
        """Drop everything waiting and cut what is prepared or speaking (or only some classes)."""
        classes = None if p.classes is None else {_priority(c, "classes") for c in p.classes}
        removed, cut = self.speaker.take_back(lambda u: classes is None or u.priority in classes, "cleared")
        return {"removed": len(removed), "cut": len(cut)}

    @verb("skip", mutates=True)
    async def v_skip(self, _: NoParams) -> dict:
        """Cut what is speaking now; the next utterance follows."""
        u = self.speaker.skip()
        return {"skipped": u.id if u else None}

    @verb("pause", mutates=True)
    async def v_pause(self, _: NoParams) -> dict:
        """Hold speech (sinks hold their sound); the queue keeps filling."""
        await self.speaker.pause()
        return {"paused": True}

    @verb("resume", mutates=True)
    async def v_resume(self, _: NoParams) -> dict:
        """Go on speaking."""
        await self.speaker.resume()
        return {"paused": False}

    # -- verbs: live sound ---------------------------------------------------------------------

    def _live(self):
        if self.live is None:
            raise ApiError("not_ready", "live sound settings are not set up in this daemon")
        return self.live

    async def _saved(self) -> bool:
        """Keep the live settings as they are now; the write (with its fsync: slow on an SD card)
        runs in a thread, one at a time, so the file always ends with the latest change."""
        live = self._live()
        async with self._live_lock:
            if await anyio.to_thread.run_sync(live.write, live.snapshot()):  # the state when its turn comes
                return True
        self.events.publish("live.problem", path=str(live.path), problem=live.problem)
        return False

    @verb("sound")
    async def v_sound(self, _: NoParams) -> dict:
        """The live sound: master volume, each sink's volume, speech rate and default voice."""
        self._live()
        return self.sound()

    @verb("volume", VolumeParams, mutates=True)
    async def v_volume(self, p: VolumeParams) -> dict:
        """Set the master volume, or one sink's, in percent (0-150); heard from the next audio chunk."""
        live = self._live()
        if p.sink is not None and not any(s.name == p.sink for s in self.sinks):
            names = [s.name for s in self.sinks]
            raise ApiError("not_found", f"no sink {p.sink!r}; the sinks are {names} (see `ishowttsctl status`); "
                           "leave the sink out to set the master volume")  # fmt: skip
        was = live.set_volume(p.sink, p.percent)
        saved = await self._saved()
        self.events.publish("volume.changed", sink=p.sink or "master", percent=p.percent, was=was, saved=saved)
        return {**self.sound(), "saved": saved}

    @verb("rate", RateParams, mutates=True)
    async def v_rate(self, p: RateParams) -> dict:
        """Set the speech rate (0.5-2.0, a speed multiplier every engine honours); used from the next utterance."""
        live = self._live()
        rate = round(p.rate, 3)
        was = live.set_rate(rate)
        saved = await self._saved()
        self.events.publish("rate.changed", rate=rate, was=was, saved=saved)
        return {**self.sound(), "saved": saved}

    @verb("voices.default", DefaultVoiceParams, mutates=True)
    async def v_voice_default(self, p: DefaultVoiceParams) -> dict:
        """Choose the default voice (a known voice; null: the config's again); used from the next utterance."""
        live = self._live()
        engines = self._ready_engines()
        if p.id is not None and not engines.has_voice(p.id):
            known = sorted(v["id"] for v in engines.voices() if not v.get("error"))
            raise ApiError("unknown_voice", f"no voice {p.id!r}; the known voices are {known} "
                           "(`ishowttsctl voices` lists them with their engines)")  # fmt: skip
        was = live.set_default_voice(p.id)
        saved = await self._saved()
        self.events.publish("voice.default_changed", voice=p.id, was=was, saved=saved)
        return {**self.sound(), "saved": saved}

    # -- verbs: configuration ------------------------------------------------------------------

    @verb("reload", mutates=True)
    async def v_reload(self, _: NoParams) -> dict:
        """Re-read the config file: moderation and queue policy change at once (like SIGHUP)."""
        try:
            return self._reload()
        except ConfigError as e:  # reported as `reload_failed` by the reload itself
            raise ApiError("config_error", f"reload refused, the old config stays in force:\n{e}") from None

    @verb("voices.reload", VoicesReloadParams, mutates=True)
    async def v_voices_reload(self, p: VoicesReloadParams) -> dict:
        """Re-read `[[voices]]` from the config file and prepare them again, without a restart."""
        engines = self._ready_engines()
        voices = self.cfg.voices
        if self.cfg.path is not None:
            try:
                voices = load_config(self.cfg.path).voices
            except ConfigError as e:
                raise ApiError("config_error", str(e)) from None
        if p.id is not None:
            voices = [v for v in voices if v.id == p.id]
            if not voices:
                raise ApiError("unknown_voice", f"no [[voices]] entry with id {p.id!r} in {self.cfg.path or 'the config'}")
        reloaded, errors = [], {}
        for vc in voices:
            if await engines.add_voice(vc) is None:
                errors[vc.id] = engines.voice_errors.get(vc.id, "failed")
            else:
                reloaded.append(vc.id)
        self.events.publish("voices.reloaded", voices=reloaded, errors=len(errors))
        return {"reloaded": reloaded, "errors": errors}

    @verb("bench", BenchParams, mutates=True)
    async def v_bench(self, p: BenchParams) -> dict:
        """Time the running engine on a fixed text set; optionally keep it as the health baseline."""
        engines = self._ready_engines()
        if p.voice is not None and not engines.has_voice(p.voice):
            raise ApiError("unknown_voice", f"no voice {p.voice!r}; list them with `ishowttsctl voices`")
        if self._bench_lock.locked():
            raise ApiError("busy", "a bench is already running; wait for it to finish")
        async with self._bench_lock:
            try:
                return await self.health_monitor.bench(p.voice, p.runs, p.texts, p.save_baseline)
            except OSError as e:
                raise ApiError("baseline_not_saved", f"cannot write {self.health_monitor.baselines.path}: {e.strerror}; "
                               "check [health] baseline_file and its folder's permissions") from None  # fmt: skip
            except Exception as e:  # an engine failure mid-bench is the bench's failure, not a crash
                raise ApiError("bench_failed", f"{type(e).__name__}: {e}") from None

    # -- verbs: the control room (sources, voices, history and speech for callers) -------------

    def _options(self, voice: str | None, options: dict[str, Any]) -> dict[str, Any]:
        """Per-request engine options, checked against the engine that would speak."""
        if not options:
            return {}
        engine, _ = self._ready_engines().resolve(voice)
        try:
            return engine.Options.model_validate(options).model_dump(exclude_none=True)
        except ValidationError as e:
            raise ApiError("invalid_params", f"options ({engine.name}): {validation_message(e)}") from None

    def _lineup(self):
        if self.lineup is None:
            raise ApiError("not_ready", "sources are not running yet; try again in a moment")
        return self.lineup

    @verb("sources.stop", SourceParams, mutates=True)
    async def v_source_stop(self, p: SourceParams) -> dict:
        """Stop a source (disconnect from its room or channel) until `sources.start`."""
        return await self._on_source(self._lineup().stop, p.name)

    @verb("sources.start", SourceParams, mutates=True)
    async def v_source_start(self, p: SourceParams) -> dict:
        """Start a stopped source again (a fresh connection with the same settings)."""
        return await self._on_source(self._lineup().start, p.name)

    async def _on_source(self, action, name: str) -> dict:
        try:
            src = action(name)
            return (await src if inspect.isawaitable(src) else src).status()
        except KeyError:
            raise ApiError("not_found", f"no source {name!r}; see `ishowttsctl status`") from None
        except ValueError as e:
            raise ApiError("busy", str(e)) from None

    @verb("sources.add", SourceAddParams, mutates=True)
    async def v_source_add(self, p: SourceAddParams) -> dict:
        """Add a source for this run (a Bilibili room, a Twitch channel); the config file is untouched."""
        cls = self.plugins.sources.get(p.type)
        if cls is None:
            raise ApiError("invalid_params", f"type: unknown source type {p.type!r}; known: {sorted(self.plugins.sources)}")
        local = sorted(k for k in p.settings if k.endswith(("_file", "_env")) or k in ("path", "directory"))
        if local:  # files and environment variables are the config file's to name, never a remote caller's
            raise ApiError("invalid_params", f"settings: {local} name local files or secrets; put them in the config file")
        try:
            settings = validate_table(cls.Settings, {**p.settings, "type": p.type}, "settings", None)
            if settings.name is None:  # named for what was added, as its Settings normalised it (a URL → the room)
                room = next((getattr(settings, k) for k in ("room_id", "channel") if getattr(settings, k, None)), None)
                settings = settings.model_copy(update={"name": f"{p.type}-{room}" if room is not None else p.type})
            return self._lineup().add(cls, settings).status()
        except ConfigError as e:
            raise ApiError("invalid_params", str(e).removeprefix("config: ")) from None
        except ValueError as e:
            raise ApiError("busy", str(e)) from None

    @verb("voices.upload", VoiceUploadParams, mutates=True)
    async def v_voice_upload(self, p: VoiceUploadParams) -> dict:
        """Give a voice (new or configured) a reference recording and its transcript; kept across restarts."""
        engines, web = self._ready_engines(), self.cfg.web
        if self.voicestore is None:
            raise ApiError("not_ready", "voice uploads need the daemon's state folder")
        try:
            transcript, samples, rate = await anyio.to_thread.run_sync(check_upload, p.id, p.transcript, p.audio_b64, web)
        except UploadRefused as e:
            raise ApiError(e.code, e.message) from None
        name = p.engine or engines.engine_of(p.id) or engines.active
        engine = engines.engines.get(name)
        if engine is None or not engine.clones:
            cloners = sorted(n for n, e in engines.engines.items() if e.clones)
            raise ApiError("invalid_params", f"engine: {name!r} cannot clone a voice from a recording; "
                           f"use one that can ({cloners or 'none is loaded: configure [engine.f5]'})")  # fmt: skip
        vc = await anyio.to_thread.run_sync(self.voicestore.save, p.id, samples, rate, transcript, name, p.language)
        if await engines.add_voice(vc) is None:
            error = engines.voice_errors.pop(p.id, "failed")
            await anyio.to_thread.run_sync(self.voicestore.remove, p.id)
            await self._restore_config_voice(p.id)
            raise ApiError("voice_failed", f"{name} could not prepare voice {p.id!r}: {error}")
        seconds = round(len(samples) / rate, 2)
        self.events.publish("voice.uploaded", voice=p.id, engine=name, seconds=seconds)
        return {"id": p.id, "engine": name, "seconds": seconds, "sample_rate": rate}

    async def _restore_config_voice(self, voice_id: str) -> str:
        vc = next((v for v in self.cfg.voices if v.id == voice_id), None)
        if vc is not None and await self._ready_engines().add_voice(vc) is not None:
            return "config"
        self._ready_engines().forget_voice(voice_id)
        return "removed"

    @verb("voices.restore", VoiceIdParams, mutates=True)
    async def v_voice_restore(self, p: VoiceIdParams) -> dict:
        """Drop a voice's upload: a configured voice gets its `[[voices]]` recording back, a new one goes."""
        if self.voicestore is None or not self.voicestore.has(p.id):
            raise ApiError("not_found", f"voice {p.id!r} has no uploaded recording")
        await anyio.to_thread.run_sync(self.voicestore.remove, p.id)
        now = await self._restore_config_voice(p.id)
        self.events.publish("voice.restored", voice=p.id, now=now)
        return {"id": p.id, "now": now}

    @verb("voices.preview", PreviewParams)
    async def v_voice_preview(self, p: PreviewParams) -> dict:
        """A sample of a voice as audio for the caller (not played on the stream)."""
        engines = self._ready_engines()
        if not engines.has_voice(p.id):
            raise ApiError("unknown_voice", f"no voice {p.id!r}; list them with `ishowttsctl voices`")
        _, voice = engines.resolve(p.id)
        text = p.text or ("你好，这是我的声音。" if voice.language.startswith(("zh", "cmn")) else "Hello, this is my voice.")
        return await self._synthesize(text, p.id, {}, p.format)

    @verb("synthesize", SynthesizeParams)
    async def v_synthesize(self, p: SynthesizeParams) -> dict:
        """Speech as audio for the caller (`/v1/audio/speech`): behind the stream's higher classes, bounded."""
        if p.voice is not None and not self._ready_engines().has_voice(p.voice):
            raise ApiError("unknown_voice", f"no voice {p.voice!r}; list them with `ishowttsctl voices`")
        return await self._synthesize(p.text, p.voice, self._options(p.voice, p.options), p.format)

    async def _synthesize(self, text: str, voice: str | None, options: dict, fmt: str) -> dict:
        self._ready_engines()
        if self.direct is None:
            raise ApiError("not_ready", "speech for callers is not set up")
        try:
            speech = await self.direct.synthesize(text, voice, options)
        except DirectRefused as e:
            raise ApiError(e.code, e.message, retry_after=e.retry_after) from None
        data, ctype = await anyio.to_thread.run_sync(encode, speech.samples, speech.sample_rate, fmt)
        st = speech.stats
        return {"audio_b64": base64.b64encode(data).decode(), "format": fmt, "content_type": ctype,
                "sample_rate": speech.sample_rate, "audio_s": round(st.audio_s, 3), "synth_s": round(st.synth_s, 4),
                "waited_s": round(speech.waited_s, 4), "engine": st.engine, "voice": st.voice}  # fmt: skip

    def _history(self):
        if self.history is None:
            raise ApiError("not_found", "no history is kept; set [web] history above 0 or add a [[sinks]] type = \"history\"")
        return self.history

    @verb("history", HistoryParams)
    async def v_history(self, p: HistoryParams) -> dict:
        """The last utterances spoken (newest first): who, what, when, voice, RTF, whether audio is kept."""
        h = self._history()
        return {"history": h.entries()[: p.limit], "keep": h.settings.keep, "max_mb": h.settings.max_mb}

    @verb("history.audio", HistoryAudioParams)
    async def v_history_audio(self, p: HistoryAudioParams) -> dict:
        """One kept utterance's audio as a WAV file, base64."""
        got = self._history().audio(p.id)
        if got is None:
            raise ApiError("not_found", f"no audio kept for utterance {p.id}; see `ishowttsctl history`")
        pcm, rate = got
        return {"audio_b64": base64.b64encode(wav_from_pcm16(pcm, rate)).decode(), "format": "wav", "sample_rate": rate}

    @verb("web", mutates=True)
    async def v_web(self, _: NoParams) -> dict:
        """The control room's address with a one-time login code, and the overlay's read-only address."""
        if self.web is None:
            return {"enabled": False, "advice": "the web control room is off; set [web] enabled = true and restart"}
        return self.web.login_link()

    def _ready_engines(self):
        if self.engines.active is None:
            raise ApiError("not_ready", "the engine is still loading; try again in a moment (see `ishowttsctl status`)")
        return self.engines


def _priority(value: str, where: str) -> Priority:
    try:
        return Priority.parse(value)
    except ValueError as e:
        raise ApiError("invalid_params", f"{where}: {e}") from None


def validation_message(e: ValidationError) -> str:
    """A pydantic error as one line per problem: `where: what`."""
    out = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"]) or "params"
        msg = err["msg"].removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return "; ".join(out)
