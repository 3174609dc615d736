"""The speaker: synthesis of the next utterance while the current one plays, fan-out to sinks.

Two loops run side by side. The synth loop takes the next utterance from the queue as soon
as a slot is free (one playing, one prepared), runs the engine in its worker thread and
streams chunks into that utterance's buffer. An engine that can batch (`max_batch` > 1) gets
the utterances queued right behind it too, while they are of the same priority class and for
the same engine, in one `synthesize_batch` call: the batch takes one slot, and each member
still plays, is cut and is reported on its own. The play loop takes prepared utterances in
order and streams their chunks to every sink in parallel. Skip, clear, pause and resume act
on both loops at once. Each sink runs in its own task: one that raises is counted, one that
hangs is cut off after a deadline and skipped while it stays busy, and neither holds up
the others or the queue.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import anyio
import numpy as np
from anyio.abc import TaskGroup

from ishowttsd.engines.base import Engine, EngineError, Voice, stream_synthesis
from ishowttsd.engines.host import EngineHost
from ishowttsd.events import EventBus
from ishowttsd.live_settings import LiveSettings
from ishowttsd.messages import AudioChunk, Utterance
from ishowttsd.queue import SpeechQueue
from ishowttsd.sink import NotPlayed, Playback, Sink, SynthesisStats

log = logging.getLogger("ishowttsd.speaker")


@dataclass
class Prepared:
    utterance: Utterance
    engine: Engine
    stats: SynthesisStats
    send: Any
    recv: Any
    cancel: threading.Event = field(default_factory=threading.Event)
    synth_done: anyio.Event = field(default_factory=anyio.Event)
    was_cut: anyio.Event = field(default_factory=anyio.Event)  # wakes a paused play loop at once
    # how each sink did with it: "played" (to the end), or why not
    outcomes: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    cut_reason: str | None = None
    # a batch holds one slot: only its last member gives it back, once it has played
    releases_slot: bool = True


class _SinkRunner:
    """One sink: its busy flag, its current cancel scope."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.busy = False
        self.scope: anyio.CancelScope | None = None


class Speaker:
    def __init__(
        self,
        queue: SpeechQueue,
        engines: EngineHost,
        sinks: list[Sink],
        events: EventBus,
        sink_slack_s: float = 5.0,
        batch_min_rtf: float = 0.0,
        live: LiveSettings | None = None,
    ) -> None:
        self.queue = queue
        # the streamer's live sound: volumes read per chunk by each sink, the rate per utterance
        self.live = live
        self.engines = engines
        self.sinks = [_SinkRunner(s) for s in sinks]
        self.events = events
        self.sink_slack_s = sink_slack_s
        self.batch_min_rtf = batch_min_rtf
        self.paused = False
        self._resumed = anyio.Event()
        self._slots = anyio.Semaphore(2)  # one playing + one prepared ahead
        self._preparing: deque[Prepared] = deque()  # synthesized or synthesizing, not yet playing
        self.current: Prepared | None = None
        self.rtfs: deque[float] = deque(maxlen=200)
        # RTFs of utterances synthesized alone: what batching is decided on (a batch member's
        # RTF is its share of a shared pass, so it would switch batching off by itself)
        self.solo_rtfs: deque[float] = deque(maxlen=20)
        self.ttfas: deque[float] = deque(maxlen=200)
        self.spoken = 0
        self._tg: TaskGroup | None = None
        self.on_spoken: list[Callable[[Utterance, SynthesisStats], None]] = []
        # every other end: (utterance, "failed" | "expired" | "cut", reason)
        self.on_ended: list[Callable[[Utterance, str, str], None]] = []
        # called as synthesis of an utterance starts (the journal counts real attempts)
        self.on_started: list[Callable[[Utterance], object]] = []
        # called when synthesis of an utterance completed (the journal's attempts count only failures)
        self.on_synthesized: list[Callable[[Utterance], object]] = []
        # called when one sink played an utterance to its end: (utterance, sink name)
        self.on_delivered: list[Callable[[Utterance, str], object]] = []

    # -- control -----------------------------------------------------------------------------

    def idle(self) -> bool:
        return self.current is None and not self._preparing and len(self.queue) == 0

    def skip(self) -> Utterance | None:
        cur = self.current
        if cur is None:
            return None
        self._cut(cur, "skipped")
        return cur.utterance

    def take_back(self, match: Callable[[Utterance], bool], reason: str,
                  cut_reason: str | None = None) -> tuple[list[Utterance], list[Utterance]]:  # fmt: skip
        """Take matching speech back wherever it is: out of the queue, and cut if it is being
        prepared or spoken (an operator's remove or clear, a platform's deletion).
        Returns (removed from the queue, cut)."""
        removed = self.queue.remove_where(match, reason=reason)
        return removed, self.cut_where(match, cut_reason or reason)

    def cut_where(self, pred: Callable[[Utterance], bool], reason: str) -> list[Utterance]:
        """Cut what is playing or prepared if it matches (use `take_back` to remove it everywhere)."""
        cut = []
        for p in [self.current, *self._preparing]:
            if p is not None and p.cut_reason is None and pred(p.utterance):
                self._cut(p, reason)
                cut.append(p.utterance)
        return cut

    def _cut(self, p: Prepared, reason: str) -> None:
        p.cut_reason = reason
        p.stats.cut = True
        p.cancel.set()
        p.was_cut.set()
        if p is self.current:
            for r in self.sinks:
                if r.scope is not None:
                    r.scope.cancel()

    async def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self._resumed = anyio.Event()
        self.events.publish("paused")
        for r in self.sinks:
            await self._call_sink(r, "pause")

    async def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self._resumed.set()
        self.events.publish("resumed")
        for r in self.sinks:
            await self._call_sink(r, "resume")

    async def _call_sink(self, r: _SinkRunner, method: str) -> None:
        try:
            with anyio.fail_after(2):
                await getattr(r.sink, method)()
        except Exception as e:
            r.sink.counters["errors"] += 1
            r.sink.set_state("error", f"{method} failed", error=f"{type(e).__name__}: {e}")

    # -- loops ---------------------------------------------------------------------------------

    async def run(self) -> None:
        self._ready_send, self._ready_recv = anyio.create_memory_object_stream[Prepared](math.inf)
        try:
            with self._ready_send, self._ready_recv:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    tg.start_soon(self._synth_loop)
                    tg.start_soon(self._play_loop)
        finally:
            for p in [self.current, *self._preparing]:
                if p is not None:
                    p.cancel.set()
                    p.send.close()
                    p.recv.close()

    async def _synth_loop(self) -> None:
        while True:
            await self._slots.acquire()
            utt = await self.queue.get()
            try:
                engine, voice = self._resolve(utt)
            except Exception as e:  # one utterance's trouble must not end speech for good
                log.exception("cannot find a voice for utterance %s", utt.id)
                self.events.publish("failed", **utt.event_fields(), reason="voice", error=f"{type(e).__name__}: {e}")
                self._slots.release()
                continue
            members = [(utt, voice)]
            if engine.max_batch > 1 and self._synthesis_is_the_bottleneck():
                members += self._batch_mates(utt, engine, engine.max_batch - 1)
            prepared = [self._prepare(u, engine, v, last=i == len(members) - 1) for i, (u, v) in enumerate(members)]
            if len(prepared) == 1:  # alone, it streams: its first sentence plays sooner
                await self._synthesize(prepared[0], voice)
            else:
                await self._synthesize_batch(prepared, [v for _, v in members])

    def _resolve(self, utt: Utterance) -> tuple[Engine, Voice]:
        """The engine and voice for `utt`, at the live speech rate (a speed multiplier that every
        engine honours, on top of the voice's own speed and the utterance's options)."""
        engine, voice = self.engines.resolve(utt.voice, utt.options)
        rate = self.live.rate if self.live is not None else 1.0
        return engine, (voice if rate == 1.0 else replace(voice, speed=voice.speed * rate))

    def _synthesis_is_the_bottleneck(self) -> bool:
        """Batch only while synthesis is slow next to playback (median RTF of the last 20
        utterances synthesized alone >= batch_min_rtf): otherwise one at a time keeps up, and a batch prepared
        ahead would only make paid speech that arrives meanwhile wait behind it."""
        if self.batch_min_rtf <= 0:
            return True
        return bool(self.solo_rtfs) and statistics.median(self.solo_rtfs) >= self.batch_min_rtf

    def _batch_mates(self, head: Utterance, engine: Engine, limit: int) -> list[tuple[Utterance, Voice]]:
        """What is queued right behind `head` for the same engine in the same priority class
        (a batch never holds paid speech behind unpaid), without waiting."""
        voices: dict[int, Voice] = {}

        def fits(u: Utterance) -> bool:
            if u.priority != head.priority or u.options != head.options:
                return False
            try:
                e, v = self._resolve(u)
            except Exception:  # it fails on its own turn, with its own event
                return False
            voices[u.id] = v
            return e is engine

        return [(u, voices[u.id]) for u in self.queue.take_more(fits, limit)]

    def _prepare(self, utt: Utterance, engine: Engine, voice: Voice, last: bool) -> Prepared:
        """The utterance's buffer and stats, queued for the play loop (in order); `last`: the
        last of its batch, which gives the slot back once it has played."""
        for cb in self.on_started:
            try:
                cb(utt)
            except Exception:
                log.exception("an on_started callback failed for utterance %s", utt.id)
        send, recv = anyio.create_memory_object_stream[AudioChunk](math.inf)
        stats = SynthesisStats(engine=engine.name, voice=voice.id, sample_rate=engine.sample_rate)
        p = Prepared(utt, engine, stats, send, recv, releases_slot=last)
        self._preparing.append(p)
        self._ready_send.send_nowait(p)
        return p

    async def _synthesize_batch(self, batch: list[Prepared], voices: list[Voice]) -> None:
        """One engine call for the batch; each member gets its own waveform, in chunks.

        The engine is cancelled only once every member is cut; a cut member's audio is dropped.
        Stats: every member's first chunk comes after the batch's wall time; its synth_s is its
        share of that time in proportion to its audio, so its RTF is the batch's. When the
        batch call fails (one bad text, memory for the batch), the members are synthesized one
        by one, so one poisoned message fails alone and the others are still spoken.
        """
        engine = batch[0].engine
        cancel = _AllCut([p.cancel for p in batch])
        for p in batch:
            p.stats.batch = len(batch)
        t_start = time.perf_counter()
        try:
            try:
                waves = await anyio.to_thread.run_sync(
                    engine.synthesize_batch, [p.utterance.text for p in batch], voices, cancel, limiter=self.engines.limiter
                )  # fmt: skip
                wall = time.perf_counter() - t_start
                if cancel.is_set():
                    return
                if len(waves) != len(batch):
                    raise EngineError(f"{engine.name}: synthesize_batch returned {len(waves)} waveforms for {len(batch)} texts")
                total = sum(len(w) for w in waves)
                for p, w in zip(batch, waves):
                    p.stats.first_chunk_s = wall
                    p.stats.synth_s = wall * len(w) / total if total else wall / len(batch)
                    if p.cancel.is_set():
                        continue
                    step = max(1, int(engine.sample_rate * _BATCH_CHUNK_S))
                    for i in range(0, len(w), step):
                        chunk = AudioChunk(np.ascontiguousarray(w[i : i + step], dtype=np.float32), engine.sample_rate)
                        p.stats.chunks += 1
                        p.stats.audio_s += chunk.duration
                        p.send.send_nowait(chunk)
                return
            except Exception as e:
                failure = f"{type(e).__name__}: {e}"
            log.warning("a batch of %d failed (%s); synthesizing its members one by one", len(batch), failure)
            self.events.publish("batch_failed", size=len(batch), error=failure)
            for p, voice in zip(batch, voices):
                if p.stats.chunks:  # fed before the failure: its audio is whole
                    continue
                p.stats.batch, p.stats.first_chunk_s, p.stats.synth_s = 1, None, 0.0
                await self._synthesize(p, voice)  # streams, records its own error, closes its buffer
        finally:
            for p in batch:
                if not p.synth_done.is_set():
                    self._synthesis_done(p)

    async def _synthesize(self, p: Prepared, voice) -> None:
        try:
            await stream_synthesis(p.engine, p.utterance.text, voice, p.cancel, self.engines.limiter, p.stats, p.send.send_nowait)
        except Exception as e:
            p.error = f"{type(e).__name__}: {e}"
        finally:
            self._synthesis_done(p)

    def _synthesis_done(self, p: Prepared) -> None:
        p.send.close()
        p.synth_done.set()
        if p.error is None and not p.cancel.is_set() and p.stats.chunks:
            for cb in self.on_synthesized:
                try:
                    cb(p.utterance)
                except Exception:
                    log.exception("an on_synthesized callback failed for utterance %s", p.utterance.id)

    async def _hold(self, p: Prepared) -> None:
        """Wait while paused, unless `p` is cut meanwhile (a removal during a pause is at once)."""
        while self.paused and p.cut_reason is None:
            async with anyio.create_task_group() as tg:

                async def wake(ev: anyio.Event) -> None:
                    await ev.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(wake, self._resumed)
                tg.start_soon(wake, p.was_cut)

    async def _play_loop(self) -> None:
        async for p in self._ready_recv:
            try:
                await self._play(p)
            except Exception as e:  # a bug in one utterance's playback must not end speech for good
                log.exception("playing utterance %s failed", p.utterance.id)
                p.cancel.set()
                self.events.publish("failed", **p.utterance.event_fields(), reason="speaker", error=f"{type(e).__name__}: {e}")
            finally:
                p.recv.close()
                if p in self._preparing:
                    self._preparing.remove(p)
                self.current = None
                if p.releases_slot:
                    self._slots.release()

    async def _play(self, p: Prepared) -> None:
        utt = p.utterance
        await self._hold(p)
        if utt.expired() and p.cut_reason is None:
            p.cut_reason = "expired"
            p.cancel.set()
        self._preparing.remove(p)
        self.current = p
        if p.cut_reason is not None:
            await p.synth_done.wait()
            self._publish_end(p)
            return
        t_play = time.perf_counter()
        try:
            first: AudioChunk | None = await p.recv.receive()
        except anyio.EndOfStream:
            first = None
        if first is None:  # the engine failed, produced nothing, or was cut before its first chunk
            await p.synth_done.wait()
            if p.error is None and p.cut_reason is None:
                p.error = "the engine produced no audio"
            self._publish_end(p)
            return
        self.events.publish("speaking", **utt.event_fields(), engine=p.stats.engine, voice=p.stats.voice)
        runners = []
        for r in self.sinks:
            if r.sink.name in utt.delivered:  # played it already, before a retry or a restart
                continue
            if r.busy:
                r.sink.counters["skipped_busy"] += 1
                p.outcomes[r.sink.name] = "busy with an earlier utterance"
                continue
            if r.sink.state in ("failed",):
                p.outcomes[r.sink.name] = f"failed: {r.sink.last_error or r.sink.detail}"
                continue
            s, rcv = anyio.create_memory_object_stream[AudioChunk](math.inf)
            runners.append((r, s, rcv))
        finished = {id(r): anyio.Event() for r, _, _ in runners}
        # a sink that already missed a deadline is not waited for again: it still gets the
        # utterance and is cut off at its own deadline in the background, so a hung sink
        # costs the queue its slack once, not on every utterance
        stalled = {id(r) for r, _, _ in runners if r.sink.state == "stalled"}
        for r, s, rcv in runners:
            pb = Playback(utterance=utt, sample_rate=p.stats.sample_rate, stats=p.stats, _stream=rcv, gain=self._gain(r.sink.name))
            self._tg.start_soon(self._run_sink, r, pb, finished[id(r)], p.outcomes)
        async for chunk in _prepend(first, p.recv):
            await self._hold(p)
            if p.cut_reason is not None:
                break
            if p.stats.ttfa_s is None:
                p.stats.ttfa_s = time.perf_counter() - t_play
            for _, s, _ in runners:
                try:
                    s.send_nowait(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # that sink gave up on this utterance; the others go on
        await p.synth_done.wait()
        if p.error is not None:
            p.stats.cut = True  # sinks must not keep half an utterance as if it were whole
        for _, s, _ in runners:
            s.close()
        # sinks get the utterance's length plus slack to finish (paused time does not count);
        # a sink still busy after that is cut off and skipped until it returns
        budget = p.stats.audio_s + self.sink_slack_s
        for r, _, _ in runners:
            ev = finished[id(r)]
            if id(r) in stalled:
                self._tg.start_soon(self._cut_off_later, r, ev, time.monotonic() + max(budget, 0.0))
                continue
            while not ev.is_set() and budget > 0:
                t0 = time.monotonic()
                with anyio.move_on_after(min(budget, 0.1)):
                    await ev.wait()
                if not self.paused:
                    budget -= time.monotonic() - t0
            if not ev.is_set():
                if r.scope is not None:
                    r.scope.cancel()
                r.sink.counters["timeouts"] += 1
                r.sink.set_state("stalled", "did not finish in time; skipped while busy")
        self._publish_end(p)

    def _gain(self, sink: str) -> Callable[[], float] | None:
        live = self.live
        return None if live is None else (lambda: live.gain(sink))

    async def _cut_off_later(self, r: _SinkRunner, finished: anyio.Event, deadline: float) -> None:
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            await finished.wait()
        if not finished.is_set():
            if r.scope is not None:
                r.scope.cancel()
            r.sink.counters["timeouts"] += 1

    async def _run_sink(self, r: _SinkRunner, pb: Playback, finished: anyio.Event, outcomes: dict[str, str]) -> None:
        r.busy = True
        name = r.sink.name
        outcomes[name] = "cut off before its end"  # unless play() returns
        try:
            with anyio.CancelScope() as scope:
                r.scope = scope
                await r.sink.play(pb)
                if pb.stats.cut:  # it returned early because the utterance was cut
                    outcomes[name] = "cut"
                else:
                    outcomes[name] = "played"
                    self._delivered(pb.utterance, name)
                r.sink.counters["played"] += 1
                if r.sink.state in ("starting", "stalled", "error"):
                    r.sink.set_state("ok")
        except NotPlayed as e:
            r.sink.counters["missed"] += 1
            outcomes[name] = f"not played: {e}"
        except Exception as e:
            r.sink.counters["errors"] += 1
            outcomes[name] = f"error: {type(e).__name__}: {e}"
            r.sink.set_state("error", "play failed", error=f"{type(e).__name__}: {e}")
        finally:
            pb._stream.close()
            r.scope = None
            r.busy = False
            finished.set()

    def _delivered(self, utt: Utterance, sink: str) -> None:
        utt.delivered.add(sink)
        for cb in self.on_delivered:
            try:
                cb(utt, sink)
            except Exception:
                log.exception("an on_delivered callback failed for utterance %s", utt.id)

    def audible(self) -> frozenset[str]:
        """The sinks whose playing an utterance makes it said, now: those that deliver audio to
        people (a browser sink only while an overlay listens); with none, in an archive-only
        setup, any sink but a mirror (the history)."""
        audible = {r.sink.name for r in self.sinks if r.sink.delivers_audio}
        return frozenset(audible or (r.sink.name for r in self.sinks if not r.sink.mirror))

    def said(self, utt: Utterance) -> bool:
        """Whether a sink that people hear played `utt` to its end (trivially so with no sinks)."""
        return not self.sinks or bool(utt.delivered & self.audible())

    def _publish_end(self, p: Prepared) -> None:
        utt = p.utterance
        st = p.stats.to_dict()
        if p.error:
            outcome, reason = "failed", "engine"
            self.events.publish("failed", **utt.event_fields(), reason="engine", error=p.error, **st)
        elif p.cut_reason == "expired":
            outcome, reason = "expired", "ttl"
            self.events.publish("expired", **utt.event_fields(), reason="ttl")
        elif p.cut_reason is not None:
            outcome, reason = "cut", p.cut_reason
            self.events.publish("cut", **utt.event_fields(), reason=p.cut_reason, **st)
        elif not self.said(utt):
            # synthesized, but no sink that people hear played it: not said (paid speech stays owed)
            outcome, reason = "failed", "not_played"
            why = "; ".join(f"{k}: {v}" for k, v in p.outcomes.items() if v != "played") or "no sink took it"
            self.events.publish("failed", **utt.event_fields(), reason=reason, error=why, sinks=dict(p.outcomes), **st)
        else:
            self.spoken += 1
            if p.stats.rtf is not None:
                self.rtfs.append(p.stats.rtf)
                if p.stats.batch == 1:
                    self.solo_rtfs.append(p.stats.rtf)
            if p.stats.ttfa_s is not None:
                self.ttfas.append(p.stats.ttfa_s)
            self.events.publish("spoken", **utt.event_fields(), **st)
            for cb in self.on_spoken:
                try:
                    cb(utt, p.stats)
                except Exception:
                    log.exception("an on_spoken callback failed for utterance %s", utt.id)
            return
        for cb in self.on_ended:
            try:
                cb(utt, outcome, reason)
            except Exception:
                log.exception("an on_ended callback failed for utterance %s", utt.id)

    def status(self) -> dict[str, Any]:
        cur = self.current
        return {
            "paused": self.paused,
            "speaking": cur.utterance.summary() if cur else None,
            "prepared": [p.utterance.summary() for p in self._preparing],
            "spoken": self.spoken,
            "rtf_median": round(statistics.median(self.rtfs), 4) if self.rtfs else None,
            "ttfa_median_s": round(statistics.median(self.ttfas), 4) if self.ttfas else None,
        }


_BATCH_CHUNK_S = 0.5  # a batch member's waveform goes to the sinks in chunks of this length


class _AllCut:
    """A batch's cancel flag: set once every member is cut, so one skip stops nobody else."""

    def __init__(self, flags: list[threading.Event]) -> None:
        self._flags = flags

    def is_set(self) -> bool:
        return all(f.is_set() for f in self._flags)


async def _prepend(first: AudioChunk, rest):
    yield first
    async for chunk in rest:
        yield chunk
