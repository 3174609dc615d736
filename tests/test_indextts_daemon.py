"""The daemon speaking through the IndexTTS2 engine (tiny model) over its control socket."""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path

import numpy as np
import pytest
from daemon_process import DaemonProcess, spoken_log

pytest.importorskip("torch")
pytest.importorskip("indextts")

import indextts_tiny  # noqa: E402

TEXT = "Hello there, how are you today?"


@pytest.fixture(scope="module")
def tiny():
    return indextts_tiny.build()


def config(d: Path, tiny, model_dir: Path | None = None) -> str:
    (d / "voice.wav").write_bytes(tiny["ref"].read_bytes())
    (d / "happy.wav").write_bytes(tiny["emo_ref"].read_bytes())
    return (
        '[daemon]\nstate_dir = "state"\n\n[engine]\ndefault = "indextts"\nfallback = "espeak"\ndefault_voice = "me"\n\n'
        + indextts_tiny.engine_table({**tiny, "dir": model_dir or tiny["dir"]}, max_mel_tokens=40)
        + '\n[[voices]]\nid = "me"\nengine = "indextts"\nreference_audio = "voice.wav"\n'
        + '\n[[voices]]\nid = "glad"\nengine = "indextts"\nreference_audio = "voice.wav"\n'
        + 'options = { emo_audio = "happy.wav", emo_alpha = 0.6 }\n'
        + '\n[[sinks]]\ntype = "file"\ndirectory = "out"\n'
    )


def wavs(d: Path, n: int, proc: DaemonProcess) -> list[Path]:
    proc.wait_for(lambda: len(sorted(d.glob("*.wav"))) >= n, timeout=300, what=f"{n} WAV files in {d}")
    return sorted(d.glob("*.wav"))


def started(tmp: Path, text: str) -> DaemonProcess:
    """The daemon, once running: loading torch and the models takes a while on a busy 2-core box."""
    d = DaemonProcess(tmp, text, wait_ready=False).start()
    try:
        d.wait_for(lambda: d.request("status", timeout=60)["state"] == "running", timeout=600, what="the daemon to be ready")
    except BaseException:
        d.stop(timeout=120)
        raise
    return d


def test_daemon_speaks_with_indextts_and_reloads_voices(tiny, tmp_path):
    d = started(tmp_path, config(tmp_path, tiny))
    try:
        eng = d.request("status", timeout=60)["engine"]
        assert eng["active"] == "indextts" and eng["fallback_reason"] is None
        info = eng["engines"]["indextts"]
        assert info["warm"] and info["device"] == "cpu" and info["dtype"] == "fp32" and info["sample_rate"] == 22050
        assert info["reference_cache"]["miss"] >= 1
        assert (tmp_path / "state" / "indextts-voices").is_dir()
        d.request("say", {"text": TEXT}, timeout=60)
        d.request("say", {"text": "Thanks for the stream. See you tomorrow!", "voice": "glad"}, timeout=60)
        out = wavs(tmp_path / "out", 2, d)
        for f in out:
            with wave.open(str(f)) as w:
                assert w.getframerate() == 22050
                audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
            # 40 codes at most per segment, 1.72 mel frames of 256 samples per code, 200 ms between segments
            assert 256 <= len(audio) <= 2 * int(40 * 1.72) * 256 + 4410 and np.abs(audio).max() > 0
        log = spoken_log(tmp_path / "out")
        assert log[0]["said"] == TEXT and log[0].get("rtf") is not None
        sp = d.request("status", timeout=60)["speaker"]
        assert sp["rtf_median"] is not None and sp["ttfa_median_s"] is not None

        # the streamer records a new reference, then reloads the voices without a restart
        indextts_tiny.write_reference(tmp_path / "voice.wav", seconds=1.6, seed=5)
        r = d.request("voices.reload", timeout=120)
        assert r == {"reloaded": ["me", "glad"], "errors": {}}
        cache = d.request("status", timeout=60)["engine"]["engines"]["indextts"]["reference_cache"]
        assert cache["miss"] >= 2 and cache["memory"] >= 1  # "me" prepared again, "glad"'s emotion clip unchanged
        (tmp_path / "voice.wav").write_text("not audio")
        r = d.request("voices.reload", {"id": "me"}, timeout=60)
        assert r["reloaded"] == [] and "not readable audio" in r["errors"]["me"]
        d.request("say", {"text": "Still speaking after a bad reload.", "voice": "glad"}, timeout=60)
        wavs(tmp_path / "out", 3, d)
    finally:
        d.stop(timeout=120)


def test_bad_checkpoint_falls_back_to_espeak(tiny, tmp_path):
    m = tmp_path / "model"
    m.mkdir()
    for p in tiny["dir"].iterdir():
        (m / p.name).symlink_to(p, target_is_directory=p.is_dir())
    (m / "s2mel.pth").unlink()
    (m / "s2mel.pth").write_bytes(tiny["s2mel"].read_bytes()[:5000])
    d = started(tmp_path, config(tmp_path, tiny, m))
    try:
        eng = d.request("status", timeout=60)["engine"]
        assert eng["active"] == "espeak"
        assert "s2mel.pth" in eng["fallback_reason"] and "truncated" in eng["fallback_reason"]
        assert d.request("health", timeout=60)["status"] == "warn"
        d.request("say", {"text": "The fallback still speaks."}, timeout=60)
        wavs(tmp_path / "out", 1, d)
    finally:
        d.stop(timeout=120)


def test_bench_runs_on_a_tiny_model(tiny, tmp_path):
    import ishowttsd.bench as bench

    cfg = tmp_path / "bench.toml"
    cfg.write_text(indextts_tiny.engine_table(tiny))
    out = tmp_path / "bench.json"
    rc = bench.main(["--engine", "indextts", "--config", str(cfg), "--compare-upstream", "--utterances", "2",
                     "--fast-utterances", "1", "--fast-modes", "int8", "--no-normalize", "--reference", str(tiny["ref"]),
                     "--out", str(out)])  # fmt: skip
    assert rc == 0
    r = json.loads(out.read_text())
    s = r["summary"]
    for key in ("speedup_vs_upstream", "ttfa_fraction", "fast_mode_speedup", "fast_mode_rel_error"):
        assert isinstance(s[key], float) and s[key] > 0, key
    assert s["device"] == "cpu" and s["dtype"] == "fp32" and s["cpu"] and s["versions"]["indextts2_inference"] == "2.1.1"
    assert s["same_audio_length"] is True and 0 < s["ttfa_fraction"] < 1
    assert len(r["ttfa"]["segments"]) >= 2
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
