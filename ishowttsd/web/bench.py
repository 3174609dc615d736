"""Web benchmark: event -> browser latency with 1 and 20 pages, `/v1/audio/speech` against a
direct engine call, and speaker throughput with 20 overlays attached against none.

    python -m ishowttsd.web.bench --out docs/bench-web.json

It starts a real daemon (espeak, the web side on a free loopback port) and measures it from
outside: control-room pages in Debian's chromium (Playwright), HTTP requests, overlay
WebSockets in a separate process. Prints a table and writes JSON with the CPU it ran on.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TEXT = "The quick brown fox jumps over the lazy dog, and the stream goes on."
UTTERANCE = "Thank you for the follow, welcome to the stream, have a good time."
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
                 "--mute-audio", "--disable-background-timer-throttling", "--disable-renderer-backgrounding"]  # fmt: skip
# every page records, for each `received` event, how long after its publication it arrived
RECORDER = """
window.__latency = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = new NativeWebSocket(url, protocols);
  ws.addEventListener("message", (m) => {
    if (typeof m.data !== "string") return;
    const ev = JSON.parse(m.data);
    if (ev.event === "received") window.__latency.push(Date.now() - ev.ts * 1000);
  });
  return ws;
};
"""


class Daemon:
    """ishowttsd as a subprocess, with its web side on a free port."""

    def __init__(self, folder: Path, pace: bool = True) -> None:
        self.folder = folder
        self.sock = folder / "bench.sock"
        cfg = folder / "bench.toml"
        cfg.write_text(f'[daemon]\nstate_dir = "state"\n[web]\nlisten = "127.0.0.1:0"\nmax_clients = 200\n'
                       f'speech_per_minute = 100000\n[queue]\nmax_pending = 500\n'
                       f'[[sinks]]\ntype = "browser"\npace = {str(pace).lower()}\n')  # fmt: skip
        self.log = open(folder / "daemon.log", "wb")
        env = {**os.environ, "ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "ishowttsd", "--config", str(cfg), "--socket", str(self.sock)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.call("status")["state"] == "running":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the daemon did not start; see {folder / 'daemon.log'}")
            time.sleep(0.1)
        self.link = self.call("web")
        self.url = self.link["url"].rstrip("/")
        self.token = (folder / "state" / "web-token").read_text().strip()

    def call(self, method: str, params: dict | None = None) -> Any:
        from ishowttsd.control import client_request

        return client_request(self.sock, method, params, timeout=60)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def percentile(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))]


def page_latency(d: Daemon, chromium: str, counts: list[int], events: int) -> dict[str, Any]:
    """Event -> page latency (ms) with each number of open control-room pages."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        ctx = browser.new_context()
        ctx.add_init_script(RECORDER)
        login = ctx.new_page()
        login.goto(d.call("web")["login_url"])  # the session cookie serves every page
        pages = []
        for n in counts:
            while len(pages) < n:
                pg = ctx.new_page()
                pg.goto(d.url + "/")
                pg.wait_for_function("() => document.querySelector('#engine').textContent === 'espeak'")
                pages.append(pg)
            time.sleep(1.0)
            # warm-up: a page's first events compile its handlers and lay out its feed once; twenty
            # new pages doing that at the same moment on two cores is page start-up, not delivery
            for i in range(3):
                d.call("inject", {"platform": "bench", "user": f"warm{i}", "text": f"warm-up {i}"})
                time.sleep(0.05)
            time.sleep(2.0)
            for pg in pages:
                pg.evaluate("() => { window.__latency = []; }")
            d.call("pause")  # speech would compete for the CPU
            for i in range(events):
                d.call("inject", {"platform": "bench", "user": f"viewer{i}", "text": f"message {i}"})
                time.sleep(0.05)
            deadline = time.monotonic() + 60
            while any(pg.evaluate("() => window.__latency.length") < events for pg in pages) and time.monotonic() < deadline:
                time.sleep(0.2)
            samples = [x for pg in pages for x in pg.evaluate("() => window.__latency")]
            d.call("clear")
            d.call("resume")
            out[str(n)] = {"pages": n, "samples": len(samples), "p50_ms": round(percentile(samples, 50), 1),
                           "p99_ms": round(percentile(samples, 99), 1), "max_ms": round(max(samples), 1)}  # fmt: skip
        browser.close()
    return out


def speech_overhead(d: Daemon, runs: int, folder: Path) -> dict[str, Any]:
    """`/v1/audio/speech` wall time against the same synthesis called directly (espeak, in this process)."""
    import httpx
    import numpy as np

    from ishowttsd.config import Config
    from ishowttsd.engines.base import EngineContext
    from ishowttsd.engines.espeak import EspeakEngine

    engine = EspeakEngine(EspeakEngine.Settings(), EngineContext(Config(), folder))
    engine.load(lambda *a: None)
    voice = next(v for v in engine.voices() if v.id == "en")

    def direct() -> float:
        t0 = time.perf_counter()
        np.concatenate([c.samples for c in engine.synthesize(TEXT, voice, threading.Event())])
        return time.perf_counter() - t0

    body = {"model": "tts-1", "input": TEXT, "voice": "en", "response_format": "wav"}
    with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {d.token}"}, trust_env=False, timeout=60) as c:

        def http() -> tuple[float, float]:
            t0 = time.perf_counter()
            r = c.post("/v1/audio/speech", json=body)
            r.raise_for_status()
            return time.perf_counter() - t0, float(r.headers["x-synthesis-seconds"])

        for _ in range(3):  # warm both
            direct()
            http()
        directs, walls, synths = [], [], []
        for _ in range(runs):  # interleaved, so a load spike hits both
            directs.append(direct())
            w, s = http()
            walls.append(w)
            synths.append(s)
    md, mw, ms = statistics.median(directs), statistics.median(walls), statistics.median(synths)
    return {"runs": runs, "direct_ms": round(md * 1000, 2), "http_ms": round(mw * 1000, 2),
            "daemon_synth_ms": round(ms * 1000, 2), "overhead_ms": round((mw - md) * 1000, 2),
            "overhead_vs_daemon_synth_ms": round((mw - ms) * 1000, 2)}  # fmt: skip


def _overlays(url: str, n: int, ready, stop, result) -> None:
    """In a process of its own: n overlay sockets that read every frame until told to stop."""
    import asyncio

    from websockets.asyncio.client import connect

    async def one(tally: list[int]) -> None:
        async with connect(url, max_size=None) as ws:
            ready.release()
            while not stop.is_set():
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.2)
                except asyncio.TimeoutError:
                    continue
                tally[0] += len(frame) if isinstance(frame, bytes) else 0

    async def main() -> None:
        tallies = [[0] for _ in range(n)]
        await asyncio.gather(*(one(t) for t in tallies), return_exceptions=True)
        result.value = sum(t[0] for t in tallies)

    asyncio.run(main())


def throughput(d: Daemon, overlays: int, utterances: int, repeats: int) -> dict[str, Any]:
    """The speaker with `overlays` overlay sockets attached (reading everything) against none.

    Paced (the default sink: overlays play in real time) the figure is the speaker's synthesis
    throughput, 1 / median RTF; unpaced, it is audio seconds delivered per wall second with the
    overlays taking all of it as fast as the speaker makes it (a stress figure)."""
    key = d.link["overlay_url"].split("key=")[1]
    url = d.url.replace("http://", "ws://") + f"/overlay/ws?key={key}"
    import psutil

    daemon = psutil.Process(d.proc.pid)
    runs: dict[str, list[tuple[float, float, float]]] = {"none": [], "overlays": []}
    received = []
    for _ in range(repeats):
        for kind in ("none", "overlays"):
            proc = None
            if kind == "overlays":
                mp = multiprocessing.get_context("spawn")
                ready, stop, result = mp.Semaphore(0), mp.Event(), mp.Value("q", 0)
                proc = mp.Process(target=_overlays, args=(url, overlays, ready, stop, result))
                proc.start()
                for _ in range(overlays):
                    ready.acquire(timeout=60)
                time.sleep(0.5)
            d.call("pause")
            for i in range(utterances):
                d.call("say", {"text": f"{UTTERANCE} {i}", "voice": "en", "priority": "normal"})
            # events, not polling: the daemon is left alone. With no overlay listening the browser sink
            # plays (paced) but reports `failed: not_played`: nobody heard it; the speaker's work is the same
            with _Watch(d.sock, ["resumed", "spoken", "failed"]) as watch:
                cpu0 = sum(daemon.cpu_times()[:2])
                d.call("resume")
                resumed = watch.next("resumed")["ts"]
                last = [watch.next("spoken", "failed")["ts"] for _ in range(utterances)][-1]
                cpu = sum(daemon.cpu_times()[:2]) - cpu0
            wall = last - resumed
            last = d.call("history", {"limit": utterances})["history"]
            audio = sum(e["audio_s"] for e in last)
            runs[kind].append((audio / wall, 1 / statistics.median(e["rtf"] for e in last), cpu / audio))
            if proc is not None:
                stop.set()
                proc.join(30)
                received.append(result.value)
    browser = next(s for s in d.call("status")["sinks"] if s["type"] == "browser")
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in runs.items()}
    return {"utterances": utterances, "overlays": overlays, "repeats": repeats,
            "audio_s_per_wall_s": {k: round(v[0], 2) for k, v in med.items()},
            "synthesis_audio_s_per_s": {k: round(v[1], 1) for k, v in med.items()},
            "synthesis_ratio": round(med["overlays"][1] / med["none"][1], 3),
            # the daemon's own CPU per second of audio: what the fan-out costs it, apart from the load of others
            "daemon_cpu_ms_per_audio_s": {k: round(v[2] * 1000, 2) for k, v in med.items()},
            "delivery_ratio": round(med["overlays"][0] / med["none"][0], 3),
            "overlay_bytes_received": received, "overlays_dropped": browser["dropped_listeners"]}  # fmt: skip


class _Watch:
    """`events.watch` on the control socket, read in a thread: the next event of a kind, in order."""

    def __init__(self, path: Path, events: list[str]) -> None:
        import queue
        import socket

        self._q: queue.Queue = queue.Queue()
        self._s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._s.connect(str(path))
        self._s.sendall((json.dumps({"id": 1, "method": "events.watch", "params": {"events": events}}) + "\n").encode())
        self._f = self._s.makefile("rb")
        self._f.readline()  # the snapshot
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self._f:
                self._q.put(json.loads(line))
        except (OSError, ValueError):
            pass

    def next(self, *events: str, timeout: float = 600) -> dict:
        while True:
            ev = self._q.get(timeout=timeout)
            if ev.get("event") in events:
                return ev

    def __enter__(self) -> _Watch:
        return self

    def __exit__(self, *exc) -> None:
        self._s.close()


def render(r: dict[str, Any]) -> str:
    lat, sp, tp = r["latency"], r["speech"], r["throughput"]
    rows = [("figure", "measured", "target")]
    for n, x in lat.items():
        rows.append((f"event -> page p50 / p99, {n} page{'s' if n != '1' else ''} (ms)", f"{x['p50_ms']} / {x['p99_ms']}",
                     "<= 50 / <= 200" if n != "1" else ""))  # fmt: skip
    rows.append(("/v1/audio/speech over a direct engine call (ms)", f"{sp['overhead_ms']}", "<= 10"))
    rows.append(("  (wall over the daemon's own synthesis time, ms)", f"{sp['overhead_vs_daemon_synth_ms']}", ""))
    rows.append((f"speaker throughput, {tp['overlays']} overlays playing / none", f"{tp['synthesis_ratio']}", ">= 0.95"))
    rows.append(("  (synthesis: audio seconds per engine second, none / overlays)",
                 f"{tp['synthesis_audio_s_per_s']['none']} / {tp['synthesis_audio_s_per_s']['overlays']}", ""))
    rows.append(("  (daemon CPU per audio second, none / overlays, ms)",
                 f"{tp['daemon_cpu_ms_per_audio_s']['none']} / {tp['daemon_cpu_ms_per_audio_s']['overlays']}", ""))
    st = r["stress"]
    rows.append((f"unpaced: {st['overlays']} overlays taking audio as fast as it is made / none", f"{st['delivery_ratio']}", ""))
    rows.append(("  (audio seconds delivered per wall second, none / overlays)",
                 f"{st['audio_s_per_wall_s']['none']} / {st['audio_s_per_wall_s']['overlays']}", ""))
    w = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"web benchmark on {r['machine']['cpu']} ({r['machine']['cores']} cores, load {r['machine']['load_before']} "
             f"before, {r['machine']['load_after']} after)"]  # fmt: skip
    lines += ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(row)) for row in rows]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ishowttsd.web.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--pages", type=int, default=20, help="browser pages for the many-pages latency")
    ap.add_argument("--events", type=int, default=60, help="events per latency run")
    ap.add_argument("--speech-runs", type=int, default=20)
    ap.add_argument("--utterances", type=int, default=8, help="utterances per throughput run (played in real time)")
    ap.add_argument("--stress-utterances", type=int, default=30, help="utterances per unpaced run")
    ap.add_argument("--repeats", type=int, default=3, help="throughput runs per condition (medians)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ishowttsd.hardware import cpu_info

    machine = {"cpu": cpu_info().model or platform.processor(), "cores": os.cpu_count(),
               "flags": sorted(f for f in cpu_info().flags if f.startswith(("avx", "amx", "sse4"))),
               "python": platform.python_version(), "load_before": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ishowtts-webbench-") as tmp:
        folder = Path(tmp)
        (folder / "a").mkdir()
        (folder / "b").mkdir()
        d = Daemon(folder / "a")
        try:
            latency = page_latency(d, args.chromium, [1, args.pages], args.events)
            speech = speech_overhead(d, args.speech_runs, folder)
            # overlays play in real time: the browser sink keeps pace with them, as it does live
            tp = throughput(d, args.pages, args.utterances, args.repeats)
        finally:
            d.close()
        # stress: the sink does not keep pace, so the overlays take audio as fast as it is made
        d = Daemon(folder / "b", pace=False)
        try:
            stress = throughput(d, args.pages, args.stress_utterances, args.repeats)
        finally:
            d.close()
    machine["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {"machine": machine, "latency": latency, "speech": speech, "throughput": tp, "stress": stress,
              "note": "a shared 2-core machine: other work ran meanwhile (see the load averages)"}  # fmt: skip
    print(render(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
