"""The one reconnect loop (ishowttsd.reconnect.Reconnector): states, backoff, least waits, planned
moves, exception groups, surprises and cancellation, driven by real sessions; the last test is
an HTTP poller against a real server on loopback, the shape of the coming YouTube source."""

from __future__ import annotations

import http.server
import logging
import threading
import time

import anyio
import httpx
import pytest

from ishowttsd.config import Config
from ishowttsd.events import EventBus
from ishowttsd.reconnect import Backoff, Reconnector, SessionEnded, describe_error
from ishowttsd.source import Source, SourceContext, SourceSettings

FAST = dict(base=0.02, step=0.0, cap=0.02, jitter=0.0, healthy_after=0.0)


class Probe(Source):
    """A source whose session is whatever the test scripts; it records every state it reports."""

    type = "probe"

    def __init__(self, tmp_path, sessions, backoff: Backoff | None = None, **kw) -> None:
        self.events = EventBus()
        ctx = SourceContext(lambda s, m: None, lambda s, d: None, self.events, Config(), tmp_path)
        super().__init__(SourceSettings(type="probe", name="probe"), ctx)
        self.states: list[tuple[str, str, str | None]] = []
        self.sessions = list(sessions)
        self.failures: list[tuple[str, int]] = []
        self.link = Reconnector(self, backoff or Backoff(**FAST), **kw)

    def set_state(self, state: str, detail: str = "", error: str | None = None) -> None:
        self.states.append((state, detail, error))
        super().set_state(state, detail, error)

    async def session(self) -> None:
        step = self.sessions.pop(0) if self.sessions else None
        if step is None:
            await anyio.sleep_forever()
        await step(self)

    def failed(self, error: BaseException) -> None:
        self.failures.append((type(error).__name__, self.link.streak))

    async def run_until(self, done, timeout: float = 5.0) -> None:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: self.link.run(self.session, "the room", on_failure=self.failed))
                while not done(self):
                    await anyio.sleep(0.005)
                tg.cancel_scope.cancel()


def refuse(src):
    raise ConnectionRefusedError(111, "Connection refused")


def connect_then(error):
    async def step(src):
        src.link.connected("the room via host", channel="c")
        raise error

    return step


async def connect_and_stay(src):
    src.link.connected("the room via host", channel="c")
    await anyio.sleep_forever()


@pytest.mark.anyio
async def test_states_streak_counters_and_the_failure_hook(tmp_path):
    async def up_then_drop(src):
        src.link.connected("the room via host", channel="c")
        raise SessionEnded("the server went away")

    src = Probe(tmp_path, [refuse, refuse, up_then_drop, refuse])
    await src.run_until(lambda s: len(s.failures) == 4)
    kinds = [(st, d.split(";")[0]) for st, d, _ in src.states]
    assert kinds == [
        ("connecting", "the room"),
        ("backoff", "cannot connect: Connection refused"),
        ("down", "reconnecting (attempt 2): the room"),  # health warns until the source is back
        ("backoff", "cannot connect: Connection refused"),
        ("down", "reconnecting (attempt 3): the room"),
        ("connected", "the room via host"),  # the session says when it really is connected
        ("backoff", "the server went away"),
        ("down", "reconnecting (attempt 2): the room"),  # the streak restarted at the connection
        ("backoff", "cannot connect: Connection refused"),
        ("down", "reconnecting (attempt 2): the room"),
    ][: len(kinds)]
    assert src.failures == [("ConnectionRefusedError", 1), ("ConnectionRefusedError", 2), ("SessionEnded", 1),
                            ("ConnectionRefusedError", 2)]  # fmt: skip
    assert src.counters["reconnects"] == 4 and src.counters["errors"] == 4
    assert src.last_error == "cannot connect: Connection refused"
    backoff = next(d for st, d, _ in src.states if st == "backoff")
    assert backoff.endswith("reconnecting in 0.0 s")


@pytest.mark.anyio
async def test_a_session_that_returns_means_the_server_closed_it(tmp_path):
    async def returns(src):
        return None

    src = Probe(tmp_path, [returns])
    await src.run_until(lambda s: s.failures)
    assert src.last_error == "the server closed the connection"


@pytest.mark.anyio
async def test_least_wait_wins_over_a_shorter_backoff(tmp_path):
    async def risk_control(src):
        raise SessionEnded("risk control (-352)", least=0.3)

    src = Probe(tmp_path, [risk_control])
    t0 = time.monotonic()
    await src.run_until(lambda s: len(s.states) >= 3)  # connecting, backoff, down (next attempt)
    assert time.monotonic() - t0 >= 0.3
    assert src.states[1][1] == "risk control (-352); reconnecting in 0.3 s"


@pytest.mark.anyio
async def test_planned_move_reconnects_at_once_but_not_twice_in_ten_seconds(tmp_path):
    clock = [100.0]
    move = SessionEnded("the server asked us to move", planned=True)

    def connected(since: int):
        return lambda s: sum(st == "connected" for st, _, _ in s.states[since:]) >= 2

    src = Probe(tmp_path, [connect_then(move), connect_and_stay], clock=lambda: clock[0])
    await src.run_until(connected(0))
    assert src.states == [("connecting", "the room", None), ("connected", "the room via host", None),
                          ("connecting", "the server asked us to move", None), ("connected", "the room via host", None)]  # fmt: skip
    assert src.counters["reconnects"] == 1 and src.counters["errors"] == 0 and not src.failures

    clock[0] += 5.0  # a second move 5 s later waits out the backoff like any failure
    src.sessions = [connect_then(move)]
    await src.run_until(lambda s: s.failures)
    assert src.states[-1] == ("backoff", "the server asked us to move; reconnecting in 0.0 s", "the server asked us to move")

    clock[0] += 11.0  # more than 10 s after the last planned move, a move is planned again
    n = len(src.states)
    src.sessions = [connect_then(move), connect_and_stay]
    await src.run_until(connected(n))
    assert [st for st, _, _ in src.states[n:]] == ["down", "connected", "connecting", "connected"]
    assert src.states[n + 2] == ("connecting", "the server asked us to move", None)


@pytest.mark.anyio
async def test_a_planned_move_before_the_session_connected_is_a_failure(tmp_path):
    async def move_early(src):
        raise SessionEnded("the server asked us to move", planned=True)

    src = Probe(tmp_path, [move_early])
    await src.run_until(lambda s: s.failures)
    assert src.states[1][0] == "backoff" and src.counters["errors"] == 1


@pytest.mark.anyio
async def test_errors_inside_task_groups_are_unwrapped(tmp_path):
    async def grouped(src):
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            raise SessionEnded("inner reason", least=0.05)

    src = Probe(tmp_path, [grouped])
    await src.run_until(lambda s: s.failures)
    assert src.failures == [("SessionEnded", 1)] and src.last_error == "inner reason"


@pytest.mark.anyio
async def test_a_surprise_is_logged_with_its_traceback_and_survived(tmp_path, caplog):
    async def bug(src):
        {}["missing"]

    async def fine(src):
        src.link.connected("the room", channel="c")
        await anyio.sleep_forever()

    src = Probe(tmp_path, [bug, fine])
    with caplog.at_level(logging.ERROR, logger="ishowttsd.source.probe"):
        await src.run_until(lambda s: s.state == "connected")
    [rec] = [r for r in caplog.records if r.name == "ishowttsd.source.probe"]
    assert rec.getMessage() == "unexpected error in the session" and rec.exc_info[0] is KeyError
    assert src.last_error == "unexpected KeyError: 'missing'"


@pytest.mark.anyio
async def test_a_classifier_names_the_platforms_own_errors(tmp_path, caplog):
    class QuotaExceeded(Exception):
        pass

    async def quota(src):
        raise QuotaExceeded()

    src = Probe(tmp_path, [quota], classify=lambda e: "quota exceeded" if isinstance(e, QuotaExceeded) else describe_error(e))
    await src.run_until(lambda s: s.failures)
    assert src.last_error == "quota exceeded" and not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.anyio
@pytest.mark.parametrize("where", ["session", "backoff"])
async def test_cancellation_stops_the_loop_at_once(tmp_path, where):
    src = Probe(tmp_path, [refuse] if where == "backoff" else [], backoff=Backoff(base=60, step=0, cap=60, jitter=0))
    t0 = time.monotonic()
    with anyio.move_on_after(0.2):
        await src.link.run(src.session, "the room")
    assert time.monotonic() - t0 < 1.0
    assert src.state == ("backoff" if where == "backoff" else "connecting")


class _Flaky(http.server.BaseHTTPRequestHandler):
    answers: list[int] = []

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        code = self.answers.pop(0) if self.answers else 200
        body = b'{"items": ["hello"]}' if code == 200 else b"busy"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.anyio
async def test_an_http_poller_uses_the_loop_without_writing_one(tmp_path):
    """The coming YouTube source is an HTTP poller: its session polls, says connected after the
    first good answer, and lets httpx errors out; the loop names them and backs off."""
    _Flaky.answers = [503, 503]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/live/chat?key=secret"
    got: list[str] = []

    async def poll(src):
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                r = await http.get(url)
                r.raise_for_status()
                if not src.link.is_connected:
                    src.link.connected("live chat", host=r.url.host)
                got.extend(r.json()["items"])
                await anyio.sleep(0.01)

    src = Probe(tmp_path, [poll, poll, poll])
    try:
        await src.run_until(lambda s: len(got) >= 2)
    finally:
        server.shutdown()
        server.server_close()
    errors = [e for st, _, e in src.states if st == "backoff"]
    assert errors == ["HTTP 503 from /live/chat", "HTTP 503 from /live/chat"]  # the query (a key) stays out
    assert src.states[-1][:2] == ("connected", "live chat") and src.link.streak == 0
