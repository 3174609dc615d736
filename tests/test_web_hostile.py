"""Hostile clients against a real daemon's web side: hundreds of sockets, a client that never
reads; and the web side's own failures (port in use, a token file others can read)."""

from __future__ import annotations

import base64
import os
import socket
import time

import anyio
import psutil
import pytest
from daemon_process import DaemonProcess
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from web_daemon import WebDaemon

pytestmark = pytest.mark.slow

LONG = "This sentence is long enough to keep the speaker busy for a few seconds of audio. " * 3


def rss_mb(d) -> float:
    return psutil.Process(d.proc.pid).memory_info().rss / 1e6


def ws_url(d, path: str) -> str:
    return d.url.replace("http://", "ws://") + path


# what people hear in these tests: a file sink the operator marks audible (the overlay counts only
# while a page listens, so without one an utterance is reported `failed: not_played`, not `spoken`)
HEARD = '[[sinks]]\ntype = "file"\ndirectory = "out"\naudible = true\n'


def finished(d) -> int:
    """Utterances the speaker is done with, said or not: the speaker goes on."""
    counts = d.request("status")["counts"]
    return counts["spoken"] + counts.get("failed", 0)


@pytest.mark.anyio
async def test_five_hundred_websocket_clients_are_bounded_and_speech_goes_on(tmp_path):
    with WebDaemon(tmp_path, config=HEARD, web="max_clients = 100\n") as d:
        before = rss_mb(d)
        headers = {"Authorization": f"Bearer {d.token}"}
        accepted, refused = [], []

        async def one(i: int) -> None:
            try:
                ws = await connect(ws_url(d, "/api/events?events=spoken"), additional_headers=headers, open_timeout=60,
                                   max_queue=4)  # fmt: skip
            except (OSError, InvalidStatus):  # refused at the door (503) before the app saw it
                refused.append(i)
                return
            try:
                first = await ws.recv()
                assert "status" in first
                accepted.append(ws)
            except ConnectionClosed as e:
                assert e.rcvd is not None and e.rcvd.code == 1013 and "max_clients" in e.rcvd.reason
                refused.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(500):
                tg.start_soon(one, i)
        assert len(accepted) == 100 and len(refused) == 400
        d.request("say", {"text": "still speaking with five hundred knocking", "voice": "en"})
        d.wait_for(lambda: d.request("status")["counts"]["spoken"] >= 1, timeout=30, what="speech with 100 clients on")
        # every accepted client hears it
        for ws in accepted:
            with anyio.fail_after(20):
                while "still speaking" not in await ws.recv():
                    pass
        web = d.request("status")["web"]
        assert web["clients"] == 100 and web["clients_refused"] >= 400
        for ws in accepted:
            await ws.close()
        d.wait_for(lambda: d.request("status")["web"]["clients"] == 0, timeout=20, what="the clients to be let go")
        assert rss_mb(d) - before < 150


def _stuck_websocket(d, path: str) -> socket.socket:
    """A WebSocket handshake by hand, on a socket with a tiny receive buffer that is never read."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", d.port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {d.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer {d.token}\r\n\r\n").encode())  # fmt: skip
    s.settimeout(10)
    assert s.recv(1024).startswith(b"HTTP/1.1 101")
    return s


def test_a_client_that_never_reads_is_dropped_and_speech_goes_on(tmp_path):
    with WebDaemon(tmp_path, web="client_backlog_mb = 0.25\n") as d:
        key = d.request("web")["overlay_url"].split("key=")[1]
        before = rss_mb(d)
        stuck = [_stuck_websocket(d, f"/overlay/ws?key={key}"), _stuck_websocket(d, "/api/events")]
        try:
            d.wait_for(lambda: _browser(d)["listeners"] == 1, timeout=10, what="the overlay to listen")
            done0 = finished(d)
            for _ in range(4):
                d.request("say", {"text": LONG, "voice": "en"})
            # the overlay that never reads falls behind its backlog bound and is let go...
            d.wait_for(lambda: _browser(d)["dropped_listeners"] >= 1, timeout=60, what="the stuck overlay to be dropped")
            # ...while the speaker goes on with every utterance
            d.wait_for(lambda: finished(d) >= done0 + 4, timeout=120, what="all four finished")
            assert _browser(d)["listeners"] == 0
            assert rss_mb(d) - before < 100
        finally:
            for s in stuck:
                s.close()


def _browser(d) -> dict:
    return next(s for s in d.request("status")["sinks"] if s["type"] == "browser")


def test_a_port_in_use_is_reported_and_the_daemon_speaks_on(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with DaemonProcess(tmp_path, f'[web]\nlisten = "127.0.0.1:{port}"\n[daemon]\nstate_dir = "state"\n' + HEARD) as d:
            link = d.request("web")
            assert link["listening"] is False and "cannot listen" in link["error"] and "[web] listen" in link["error"]
            assert d.request("status")["web"]["error"] == link["error"]
            d.request("say", {"text": "no web, still a voice", "voice": "en"})
            d.wait_for(lambda: d.request("status")["counts"]["spoken"] >= 1, timeout=30, what="speech")
            assert "web.failed" in d.log()


def test_a_token_file_others_can_read_is_refused_with_advice(tmp_path):
    token = tmp_path / "token"
    token.write_text("x" * 40)
    token.chmod(0o644)
    with DaemonProcess(tmp_path, f'[web]\nlisten = "127.0.0.1:0"\ntoken_file = "{token}"\n') as d:
        link = d.request("web")
        assert link["listening"] is False and "chmod 600" in link["error"]
        assert "x" * 40 not in d.log()


def test_listening_beyond_loopback_needs_allow_remote_and_warns(tmp_path):
    d = DaemonProcess(tmp_path, '[web]\nlisten = "0.0.0.0:0"\n', wait_ready=False).start()
    assert d.wait(30) == 78 and "allow_remote" in d.log()
    with DaemonProcess(tmp_path, '[web]\nlisten = "0.0.0.0:0"\nallow_remote = true\n[daemon]\nstate_dir = "s"\n') as d:
        assert d.request("web")["listening"]
        time.sleep(0.2)
        assert "WARNING ishowttsd.web: web listening on 0.0.0.0:0: other machines can reach" in d.log()
