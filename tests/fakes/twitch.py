"""A fake Twitch chat on loopback: IRC over a websocket, as irc-ws.chat.twitch.tv speaks it.

It answers CAP/PASS/NICK/JOIN like Twitch (CAP ACK, 001, the JOIN echo), sends tagged
PRIVMSG / USERNOTICE / CLEARMSG / CLEARCHAT lines to joined clients (several lines per frame
when asked), sends PING and checks the PONG, and can ask clients to RECONNECT.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, serve


def escape_tag(v: str) -> str:
    return v.replace("\\", "\\\\").replace(";", "\\:").replace(" ", "\\s").replace("\r", "\\r").replace("\n", "\\n")


def tagged(tags: dict[str, str], rest: str) -> str:
    return "@" + ";".join(f"{k}={escape_tag(v)}" for k, v in tags.items()) + " " + rest


def privmsg(channel: str, login: str, text: str, **tags: str) -> str:
    base = {"badge-info": "", "badges": "", "color": "", "display-name": login.capitalize(), "emotes": "",
            "first-msg": "0", "id": f"id-{time.monotonic_ns()}", "mod": "0", "subscriber": "0",
            "tmi-sent-ts": str(int(time.time() * 1000)), "user-id": f"uid-{login}"}  # fmt: skip
    base.update({k.replace("_", "-"): v for k, v in tags.items()})
    return tagged(base, f":{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}")


def usernotice(channel: str, login: str, msg_id: str, system_msg: str, text: str | None = None, **tags: str) -> str:
    base = {"badges": "", "display-name": login.capitalize(), "id": f"un-{time.monotonic_ns()}", "login": login,
            "msg-id": msg_id, "system-msg": system_msg, "user-id": f"uid-{login}"}  # fmt: skip
    base.update({k.replace("_", "-"): v for k, v in tags.items()})
    tail = f" :{text}" if text is not None else ""
    return tagged(base, f":tmi.twitch.tv USERNOTICE #{channel}{tail}")


@dataclass
class FakeTwitch:
    channel: str = "somechannel"
    refuse_handshakes: int = 0
    valid_token: str | None = None  # when set, PASS oauth:<other> gets "Login authentication failed"
    attempts: list[float] = field(default_factory=list)
    joins: list[tuple[float, str]] = field(default_factory=list)  # (time, nick)
    received: list[str] = field(default_factory=list)  # every line clients sent
    pongs: int = 0

    def __post_init__(self) -> None:
        self.conns: set[ServerConnection] = set()
        self.joined = asyncio.Event()
        self._server = None
        self.port = 0

    async def start(self) -> None:
        self._server = await serve(self._ws, "127.0.0.1", self.port, process_request=self._process,
                                   compression=None, ping_interval=None)  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.conns.clear()
        self.joined.clear()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def _process(self, connection, request):
        self.attempts.append(time.monotonic())
        if self.refuse_handshakes > 0:
            self.refuse_handshakes -= 1
            return connection.respond(503, "busy\n")
        return None

    async def send(self, *lines: str) -> None:
        """Send lines to every joined client, all in one frame (Twitch batches lines)."""
        frame = "".join(ln + "\r\n" for ln in lines)
        for c in list(self.conns):
            try:
                await c.send(frame)
            except Exception:
                self.conns.discard(c)

    async def ping(self) -> None:
        await self.send("PING :tmi.twitch.tv")

    async def reconnect(self) -> None:
        await self.send(":tmi.twitch.tv RECONNECT")

    async def drop_all(self) -> None:
        for c in list(self.conns):
            c.transport.abort()
        self.conns.clear()
        self.joined.clear()

    async def wait_joined(self, timeout: float = 15.0) -> None:
        await asyncio.wait_for(self.joined.wait(), timeout)

    async def _ws(self, ws: ServerConnection) -> None:
        nick, password = "", ""
        try:
            async for frame in ws:
                if not isinstance(frame, str):
                    await ws.close(1003, "text frames only")
                    return
                for line in frame.split("\r\n"):
                    if not line:
                        continue
                    self.received.append(line)
                    cmd, _, arg = line.partition(" ")
                    if cmd == "CAP":
                        await ws.send(":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands\r\n")
                    elif cmd == "PASS":
                        password = arg.strip()
                    elif cmd == "NICK":
                        nick = arg.strip()
                        if not nick.startswith("justinfan") and self.valid_token and password != f"oauth:{self.valid_token}":
                            await ws.send(":tmi.twitch.tv NOTICE * :Login authentication failed\r\n")
                            await ws.close()
                            return
                        await ws.send(f":tmi.twitch.tv 001 {nick} :Welcome, GLHF!\r\n")
                    elif cmd == "JOIN":
                        chan = arg.strip().lstrip("#")
                        if chan != self.channel:
                            continue
                        await ws.send(f":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN #{chan}\r\n"
                                      f"@emote-only=0;room-id=1 :tmi.twitch.tv ROOMSTATE #{chan}\r\n")  # fmt: skip
                        self.joins.append((time.monotonic(), nick))
                        self.conns.add(ws)
                        self.joined.set()
                    elif cmd == "PONG":
                        self.pongs += 1
        except Exception:
            pass
        finally:
            self.conns.discard(ws)
            if not self.conns:
                self.joined.clear()
