"""End to end: ishowttsd with `[engine] default = "f5"` on a tiny model, over its control socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from daemon_process import end_process

pytest.importorskip("torch")
pytest.importorskip("f5_tts")

import f5_tiny  # noqa: E402

from ishowttsd.api import ApiError
from ishowttsd.control import client_request  # noqa: E402

TEXT = "Hello there, how are you today?"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return f5_tiny.build(tmp_path_factory.mktemp("f5tiny"))


def write_config(d: Path, tiny, checkpoint: str | None = None, default_voice: bool = True) -> Path:
    ref = d / "voice.wav"
    ref.write_bytes(tiny["ref"].read_bytes())
    paths = dict(tiny)
    if checkpoint:
        paths["safetensors"] = checkpoint
    cfg = d / "ishowtts.toml"
    cfg.write_text(
        '[daemon]\nstate_dir = "state"\n\n[engine]\ndefault = "f5"\nfallback = "espeak"\n'
        + ('default_voice = "me"\n' if default_voice else "")
        + "\n"
        + f5_tiny.engine_table(paths)
        + f'\n[[voices]]\nid = "me"\nengine = "f5"\nreference_audio = "voice.wav"\nreference_text = "{f5_tiny.REF_TEXT}"\n'
        + '\n[[sinks]]\ntype = "file"\ndirectory = "out"\n'
    )
    return cfg


class Daemon:
    def __init__(self, cfg: Path) -> None:
        self.sock = cfg.parent / "d.sock"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ishowttsd", "--config", str(cfg), "--socket", str(self.sock)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.log: list[str] = []
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.log.append(line.decode(errors="replace"))

    def call(self, method: str, params: dict | None = None):
        return client_request(self.sock, method, params, timeout=60)

    def wait_running(self, timeout: float = 90) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, "".join(self.log)
            try:
                st = self.call("status")
                if st["state"] == "running":
                    return st
            except (FileNotFoundError, ConnectionRefusedError, ApiError):
                pass
            time.sleep(0.2)
        raise AssertionError("daemon did not get ready:\n" + "".join(self.log))

    def stop(self) -> None:
        end_process(self.proc, 10)
        self._drainer.join(5)
        self.proc.stdout.close()


def wait_wavs(d: Path, n: int, timeout: float = 60) -> list[Path]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        wavs = sorted(d.glob("*.wav"))
        if len(wavs) >= n:
            return wavs
        time.sleep(0.2)
    raise AssertionError(f"expected {n} WAVs in {d}, found {sorted(d.iterdir()) if d.exists() else 'no folder'}")


def expected_samples(tiny, state: Path, text: str) -> int:
    """What the engine makes of `text`, computed in-process with the same model and voice."""
    from test_f5_engine import make, voice

    from ishowttsd.engines.f5 import F5Engine  # noqa: F401

    e = make(tiny, state)
    e.load(lambda *_: None)
    v = e.add_voice(voice(tiny))
    return sum(len(c.samples) for c in e.synthesize(text, v, threading.Event()))


def test_daemon_speaks_with_f5_and_reloads_voices(tiny, tmp_path):
    cfg = write_config(tmp_path, tiny)
    d = Daemon(cfg)
    try:
        st = d.wait_running()
        eng = st["engine"]
        assert eng["active"] == "f5" and eng["fallback_reason"] is None
        info = eng["engines"]["f5"]
        assert info["warm"] and info["steps"] == 7 and info["dtype"] == "fp32" and info["device"] == "cpu"
        assert info["reference_cache"] == {"memory": 0, "disk": 0, "miss": 1}
        assert (tmp_path / "state" / "f5-voices").is_dir()
        d.call("say", {"text": TEXT})
        d.call("say", {"text": "Second line. It has two sentences!"})
        wavs = wait_wavs(tmp_path / "out", 2)
        with wave.open(str(wavs[0])) as w:
            assert w.getframerate() == 24000
            frames = w.getnframes()
            audio = np.frombuffer(w.readframes(frames), dtype=np.int16)
        assert frames == expected_samples(tiny, tmp_path / "state2", TEXT)
        assert np.abs(audio).max() > 0
        log = [json.loads(x) for x in (tmp_path / "out" / "spoken.jsonl").read_text().splitlines()]
        assert log[0]["said"] == TEXT and log[0].get("rtf") is not None
        sp = d.call("status")["speaker"]
        assert sp["rtf_median"] is not None and sp["ttfa_median_s"] is not None

        # the streamer records a new reference and adds a second voice, then reloads
        f5_tiny.write_reference(tmp_path / "voice.wav", seconds=1.6, seed=5)
        (tmp_path / "other.wav").write_bytes(tiny["ref"].read_bytes())
        cfg.write_text(cfg.read_text() + '\n[[voices]]\nid = "two"\nengine = "f5"\nreference_audio = "other.wav"\n'
                       'reference_text = "This is my voice."\n')  # fmt: skip
        r = d.call("voices.reload")
        assert r == {"reloaded": ["me", "two"], "errors": {}}
        cache = d.call("status")["engine"]["engines"]["f5"]["reference_cache"]
        assert cache["miss"] == 2 and cache["memory"] == 1  # "me" re-prepared, "two" equals the old file
        assert {v["id"] for v in d.call("voices")["voices"]} >= {"me", "two"}
        (tmp_path / "other.wav").write_text("not audio")
        r = d.call("voices.reload", {"id": "two"})
        assert r["reloaded"] == [] and "not readable audio" in r["errors"]["two"]
        with pytest.raises(ApiError, match=r"no \[\[voices\]\] entry with id .nobody."):
            d.call("voices.reload", {"id": "nobody"})
        d.call("say", {"text": "Still speaking after a bad reload.", "voice": "me"})
        wait_wavs(tmp_path / "out", 3)
    finally:
        d.stop()


def test_bad_checkpoint_falls_back_to_espeak(tiny, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(tiny["safetensors"].read_bytes()[:1000])
    # default_voice names the F5 voice whose engine failed: the fallback speaks instead
    d = Daemon(write_config(tmp_path, tiny, checkpoint=str(bad), default_voice=True))
    try:
        st = d.wait_running()
        eng = st["engine"]
        assert eng["active"] == "espeak"
        assert "broken.safetensors" in eng["fallback_reason"] and "truncated" in eng["fallback_reason"]
        health = d.call("health")
        assert health["status"] == "warn"
        d.call("say", {"text": "The fallback still speaks."})
        wait_wavs(tmp_path / "out", 1)
    finally:
        d.stop()


def test_f5_without_any_voice_falls_back_with_advice(tiny, tmp_path):
    cfg = write_config(tmp_path, tiny, default_voice=False)
    text = cfg.read_text()
    cfg.write_text(text[: text.index("[[voices]]")] + text[text.index("[[sinks]]"):])
    d = Daemon(cfg)
    try:
        eng = d.wait_running()["engine"]
        assert eng["active"] == "espeak" and "no usable voice" in eng["fallback_reason"]
        assert "[[voices]]" in eng["fallback_reason"]
    finally:
        d.stop()


def test_bench_runs_on_a_tiny_model(tiny, tmp_path):
    import ishowttsd.bench as bench

    cfg = write_config(tmp_path, tiny)
    out = tmp_path / "bench.json"
    rc = bench.main(["--engine", "f5", "--config", str(cfg), "--compare-upstream", "--utterances", "2",
                     "--fast-utterances", "1", "--out", str(out), "--reference", str(tiny["ref"]),
                     "--reference-text", f5_tiny.REF_TEXT])  # fmt: skip
    assert rc == 0
    s = json.loads(out.read_text())["summary"]
    for key in ("speedup_vs_upstream", "throughput_ratio", "ttfa_fraction", "fast_mode_speedup", "fast_mode_rel_error"):
        assert isinstance(s[key], float) and s[key] > 0, key
    assert s["device"] == "cpu" and s["steps"] == 7 and s["dtype"] == "fp32" and s["versions"]["f5_tts"] == "1.1.22"
    assert 0 < s["ttfa_fraction"] < 1
