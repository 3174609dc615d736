"""The queue's invariants, as properties: bound, order, paid last to go, accounting closes."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ishowttsd.config import ModerationConfig
from ishowttsd.events import EventBus
from ishowttsd.messages import Kind, Message, Priority, User, Utterance
from ishowttsd.moderation import Merged, Moderator, Rejection
from ishowttsd.queue import EVICTION_ORDER, SpeechQueue, ttl_from_config


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def utt(prio: Priority, clock: Clock, ttl: float = 30.0, text: str = "x") -> Utterance:
    return Utterance(text=text, priority=prio, deadline=clock.t + ttl, created=clock.t)


ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(list(Priority)), st.floats(1, 50)),
    st.tuples(st.just("get")),
    st.tuples(st.just("tick"), st.floats(0, 20)),
    st.tuples(st.just("remove"), st.integers(0, 30)),
    st.tuples(st.just("clear"), st.sampled_from(list(Priority))),
    st.tuples(st.just("bound"), st.integers(1, 12)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bound=st.integers(1, 12), script=st.lists(ops, max_size=80))
def test_queue_invariants(bound, script):
    clock = Clock()
    bus = EventBus()
    q = SpeechQueue(bound, bus, clock=clock)
    put, got, seen = [], [], []
    discarded: dict[str, list[Utterance]] = {"dropped": [], "expired": []}

    def on_discard(u: Utterance, event: str, reason: str) -> None:
        discarded[event].append(u)
        # owed (paid, membership) speech is never dropped for space
        assert not (reason == "queue_full" and u.priority.owed), "owed speech dropped for space"
        if reason == "queue_full":
            # and within its class, the oldest goes first
            same = [w for w in q.pending() if w.priority == u.priority]
            assert all(w.created >= u.created for w in same)
            lower = EVICTION_ORDER[: EVICTION_ORDER.index(u.priority)]
            assert not any(w.priority in lower for w in q.pending()), "a higher class dropped before a lower one"

    q.on_discard.append(on_discard)
    for op in script:
        if op[0] == "put":
            u = utt(op[1], clock, op[2])
            put.append(u)
            q.put(u)
        elif op[0] == "get":
            waiting = [w for w in q.pending() if not w.expired(clock.t)]
            u = q.get_nowait()
            if u is None:
                assert not waiting
            else:
                got.append(u)
                best = min(w.priority for w in waiting)
                assert u.priority == best, "a lower class was spoken before a higher one"
                assert u is [w for w in waiting if w.priority == best][0], "not first come first served"
                assert not u.expired(clock.t)
        elif op[0] == "tick":
            clock.t += op[1]
        elif op[0] == "remove" and put:
            target = put[op[1] % len(put)].id
            q.remove_where(lambda u: u.id == target, "removed")
        elif op[0] == "clear":
            q.remove_where(lambda u: u.priority == op[1], "cleared")
        elif op[0] == "bound":
            q.configure(op[1], 0, "")
        # never above its bound
        # the bound holds for what may be dropped; owed speech has its own bound (paid.py)
        assert sum(1 for w in q.pending() if not w.priority.owed) <= q.max_pending
        pend = q.pending()
        assert [w.priority for w in pend] == sorted(w.priority for w in pend)
        assert len(pend) == len(q) == len({w.id for w in pend})
        seen.append(len(q))
    # accounting closes: everything put is got, dropped, expired or still pending — once
    dropped = discarded["dropped"]
    ids = [u.id for u in got + dropped + discarded["expired"] + q.pending()]
    assert sorted(ids) == sorted(u.id for u in put)
    assert bus.counts["queued"] == len(put)
    assert bus.counts["dropped"] + bus.counts["expired"] == len(dropped) + len(discarded["expired"])


def test_owed_speech_is_never_dropped_for_space():
    clock = Clock()
    q = SpeechQueue(3, EventBus(), clock=clock)
    paid = [utt(Priority.PAID, clock) for _ in range(5)] + [utt(Priority.MEMBERSHIP, clock) for _ in range(2)]
    for u in paid:
        assert q.put(u) == []  # a burst of super chats past the bound: none goes
    chat = [utt(Priority.NORMAL, clock) for _ in range(3)]
    for u in chat:
        assert q.put(u) == []  # the bound counts what may be dropped
    say = utt(Priority.URGENT, clock)
    assert q.put(say) == [chat[0]]  # over it, the lowest class goes first, oldest first
    assert all(u.id in q for u in paid)


def test_flood_mode_on_off_and_announce_once():
    clock = Clock()
    bus = EventBus()
    q = SpeechQueue(100, bus, clock=clock, flood_threshold=10, flood_announce="还有{backlog}条弹幕")
    for _ in range(9):
        q.put(utt(Priority.NORMAL, clock))
    assert not q.flooded
    q.put(utt(Priority.NORMAL, clock))
    assert q.flooded and q.floods == 1
    first = q.get_nowait()
    assert first.source == "flood" and first.text == "还有10条弹幕" and first.priority == Priority.URGENT
    for _ in range(20):
        q.put(utt(Priority.NORMAL, clock))
    assert sum(1 for u in q.pending() if u.source == "flood") == 0  # said once per flood
    while len(q) >= 5:
        q.get_nowait()
    assert not q.flooded
    assert bus.counts["flood"] == 2
    st_ = q.stats()
    assert st_["latency_median_s"] is not None and st_["flood"] is False and st_["floods"] == 1


def test_stats_report_backlog_and_latency():
    clock = Clock()
    q = SpeechQueue(10, EventBus(), clock=clock)
    q.put(utt(Priority.NORMAL, clock))
    clock.t += 2.5
    q.put(utt(Priority.PAID, clock))
    s = q.stats()
    assert s["pending"] == 2 and s["oldest_wait_s"] == 2.5 and s["by_class"] == {"paid": 1, "normal": 1}
    q.get_nowait()
    clock.t += 1
    q.get_nowait()
    s = q.stats()
    assert s["latency_median_s"] == pytest.approx(1.75) and s["latency_max_s"] == pytest.approx(3.5)


def test_smaller_bound_on_reload_drops_at_once():
    clock = Clock()
    q = SpeechQueue(10, EventBus(), clock=clock)
    for p in (Priority.PAID, Priority.NORMAL, Priority.LOW, Priority.NORMAL):
        q.put(utt(p, clock))
    dropped = q.configure(1, 0, "")
    assert [u.priority for u in dropped] == [Priority.LOW, Priority.NORMAL]
    assert [u.priority for u in q.pending()] == [Priority.PAID, Priority.NORMAL]


def test_get_waits_for_put():
    async def main():
        q = SpeechQueue(5, EventBus())
        got = []

        async def consumer():
            got.append(await q.get())

        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer)
            await anyio.sleep(0.01)
            q.put(Utterance(text="hi", priority=Priority.NORMAL))
        assert got[0].text == "hi"

    anyio.run(main)


# -- the pipeline: moderation -> queue, driven by random chat from both platforms -----------------

kinds = st.sampled_from(["danmaku", "danmaku", "danmaku", "gift", "superchat", "guard", "bits", "sub", "system"])
texts = st.sampled_from(["hi", "晚上好", "!cmd", "", "傻逼", "https://x.io", "哈哈哈哈哈哈", "gg", "一二三四五六七八九十" * 3])


@st.composite
def messages(draw):
    platform = draw(st.sampled_from(["bilibili", "twitch"]))
    kind = draw(kinds)
    uid = draw(st.integers(0, 6))
    extra = {}
    amount, currency = None, None
    if kind == "gift":
        extra = {"gift": draw(st.sampled_from(["辣条", "小心心"])), "num": draw(st.integers(1, 5))}
        if draw(st.booleans()):
            amount, currency = 0.1 * extra["num"], "CNY"
            extra["combo_id"] = f"c{uid}"
        else:
            amount, currency = 0.1, "silver"
    if kind in ("superchat", "bits"):
        amount, currency = 30.0, "CNY"
    return Message(platform=platform, kind=Kind(kind), text=draw(texts), user=User(id=str(uid), name=f"u{uid}"),
                   amount=amount, currency=currency, id=draw(st.sampled_from(["", "", f"m{draw(st.integers(0, 50))}"])),
                   extra=extra)  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=st.lists(st.one_of(messages(), st.sampled_from(["get", "tick"])), max_size=120), bound=st.integers(1, 15))
def test_pipeline_accounting_closes(script, bound):
    """received = spoken + filtered + merged + dropped + expired + pending, on the bus's counters."""
    clock = Clock()
    bus = EventBus()
    q = SpeechQueue(bound, bus, clock=clock, flood_threshold=max(2, bound // 2))
    cfg = ModerationConfig(block_words=["傻逼"], max_chars=20, user_cooldown_s=3, duplicate_window_s=5)
    mod = Moderator(cfg, ttl_from_config({"normal": 10, "low": 5}), clock=clock)
    for step in script:
        if step == "get":
            u = q.get_nowait()
            if u is not None:
                bus.publish("spoken", **u.event_fields())
        elif step == "tick":
            clock.t += 4
        else:
            bus.publish("received", platform=step.platform)
            out = mod.moderate(step, flood=q.flooded, is_pending=q.contains)
            if isinstance(out, Rejection):
                bus.publish("filtered", reason=out.reason)
            elif isinstance(out, Merged):
                assert out.utterance.id in q
                bus.publish("merged")
            else:
                # deadlines come from the moderator's own clock base: rebase them onto the test clock
                out.deadline = clock.t + (mod.ttl[out.priority])
                out.created = clock.t
                q.put(out)
        assert sum(1 for w in q.pending() if not w.priority.owed) <= bound
    c = bus.counts
    assert c["received"] == c["spoken"] + c["filtered"] + c["merged"] + c["dropped"] + c["expired"] + len(q)
    assert c["received"] == c["filtered"] + c["merged"] + c["queued"]
