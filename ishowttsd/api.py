"""Every control verb, implemented once: the one API behind every front door.

The control socket (`control.py`) and the HTTP server are thin transports over :class:`Api`:
each verb has one implementation, one parameter schema (a pydantic model: unknown keys,
wrong types and non-finite numbers are refused) and one error vocabulary (:data:`ERRORS`).
The API is handed the parts it needs, never the daemon.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable

import anyio
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ishowttsd import __version__
from ishowttsd.config import Config, ConfigError, load_config
from ishowttsd.events import catalogue
from ishowttsd.messages import Kind, Message, Priority, User, Utterance

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
    "internal_error": "a bug: the message says what failed",
}


class ApiError(Exception):
    """An error answered to the client: a code from :data:`ERRORS` and advice in the message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Params(BaseModel):
    """Base for a verb's parameters: unknown keys are errors, numbers must be finite."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class NoParams(Params):
    pass


class SayParams(Params):
    text: str = Field(min_length=1, max_length=2000)
    voice: str | None = Field(default=None, max_length=200)
    priority: str = "urgent"


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
                 plugins, sources: list, sinks: list, intake, paid, reload: Callable[[], dict[str, Any]]) -> None:  # fmt: skip
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
        self._bench_lock = anyio.Lock()
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
            "queue": self.queue.stats(),
            "journal": self.paid.status(),
            "speaker": self.speaker.status(),
            "engine": self.engines.status(),
            "sources": [s.status() for s in self.sources],
            "sinks": [s.status() for s in self.sinks],
            "plugins": {"loaded": sum(1 for r in self.plugins.records if r.state == "loaded"),
                        "broken": [r.to_dict() for r in self.plugins.broken]},
            "hardware": self.hardware.snapshot(),
        }  # fmt: skip

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
        await anyio.to_thread.run_sync(self.hardware.sample_for_health)
        return self.health_monitor.report()

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
        """The voices, with their engine and any error."""
        return {"voices": self._ready_engines().voices(), "default": self.cfg.engine.default_voice}

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
        utt = Utterance(text=text, priority=prio, voice=p.voice, source="control", deadline=self.intake.deadline(prio))
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
