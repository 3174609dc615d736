"""The `triton` engine against the real Triton server (nvidia-pytriton's tritonserver on CPU):
our model repository (whole and streaming) and upstream F5-TTS's `f5_tts` layout, both on a
tiny random-weight F5 model; voices sent once; dynamic batching; each fault's error."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
pytest.importorskip("torch")
pytest.importorskip("f5_tts")

import f5_tiny  # noqa: E402
import triton_server as ts  # noqa: E402
from daemon_process import DaemonProcess  # noqa: E402

from ishowttsd.engines.base import EngineContext, EngineError, EngineUnavailable, Voice  # noqa: E402
from ishowttsd.engines.triton import TritonEngine, TritonSettings  # noqa: E402

TEXT = "Hello there, how are you today? The weather is nice. Let us go out."


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return f5_tiny.build(tmp_path_factory.mktemp("f5tiny"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny):
    """Ours whole and streaming, upstream's layout at 16 kHz, and the faulty model, on one server."""
    ts.require_server()
    root = tmp_path_factory.mktemp("triton")
    repo = root / "models"
    params = ts.tiny_params(tiny, state_dir=str(root / "state"))
    ts.add_ours(repo, "f5_tts", params)
    ts.add_ours(repo, "f5_tts_stream", params, source="f5_tts_stream")
    ts.add_upstream(repo, "f5_tts_upstream", {**params, "reference_audio_sample_rate": "16000"})
    ts.add_faulty(repo)
    with ts.TritonServer(repo, root / "server.log") as srv:
        yield srv


def engine(url: str, tmp_path: Path, **kw) -> TritonEngine:
    return TritonEngine(TritonSettings(url=url, **kw), EngineContext(config=None, state_dir=tmp_path))  # type: ignore[arg-type]


def connect(url: str, tmp_path: Path, tiny, **kw) -> tuple[TritonEngine, Voice]:
    e = engine(url, tmp_path, **kw)
    e.load(lambda stage, fraction: None)
    e.warmup(lambda stage, fraction: None)
    v = e.add_voice(Voice(id="me", engine="triton", reference_audio=str(tiny["ref"]), reference_text=f5_tiny.REF_TEXT))
    return e, v


def speak(e: TritonEngine, v: Voice, text: str = TEXT) -> tuple[np.ndarray, list[float]]:
    """The utterance's audio and when each chunk arrived (seconds from the start)."""
    t0 = time.perf_counter()
    chunks, times = [], []
    for c in e.synthesize(text, v, threading.Event()):
        assert c.sample_rate == 24_000
        chunks.append(c.samples)
        times.append(time.perf_counter() - t0)
    return np.concatenate(chunks), times


def prepared(server, model: str) -> int:
    return len(re.findall(rf'"{model}: prepared voice', server.log()))


def test_our_model_speaks_and_gets_each_voice_once(server, tiny, tmp_path):
    e, v = connect(server.url, tmp_path, tiny, model="f5_tts")
    assert (e.info_.layout, e.info_.streaming, e.reference_rate) == ("ishowtts", False, 24_000)
    before = prepared(server, "f5_tts")
    lengths = [len(speak(e, v, t)[0]) for t in (TEXT, "Second one, a bit shorter.", TEXT)]
    assert lengths[0] == lengths[2] > lengths[1] > 24_000  # deterministic (seeded) and seconds long
    assert e.references_sent == 1 and e.requests == 3
    assert prepared(server, "f5_tts") == before + 1  # prepared once on the server, then used by id
    checks = {c["check"]: c for c in e.health_checks()}
    assert checks["triton:server"]["level"] == "ok" and "live and ready" in checks["triton:server"]["reason"]
    assert checks["triton:speed"]["data"]["requests"] == 3 and checks["triton:speed"]["data"]["rtf_median"] > 0
    # a second daemon with the same voice: the server already has it
    e2, v2 = connect(server.url, tmp_path, tiny, model="f5_tts")
    speak(e2, v2, "From another daemon.")
    assert prepared(server, "f5_tts") == before + 1


def test_streaming_model_sends_the_first_sentence_first_and_the_same_audio(server, tiny, tmp_path):
    es, vs = connect(server.url, tmp_path, tiny, model="f5_tts_stream")
    assert es.info_.streaming
    ew, vw = connect(server.url, tmp_path, tiny, model="f5_tts")
    streamed, times = speak(es, vs)
    whole, _ = speak(ew, vw)
    assert len(times) >= 2, "a decoupled model answers sentence by sentence"
    assert times[0] < times[-1]
    # the same model and seed: the stream, joined, is the whole utterance
    assert len(streamed) == len(whole)
    np.testing.assert_allclose(streamed, whole, atol=1e-4)


def test_upstream_layout_at_its_reference_rate(server, tiny, tmp_path):
    e, v = connect(server.url, tmp_path, tiny, model="f5_tts_upstream")
    assert (e.info_.layout, e.reference_rate) == ("upstream", 16_000)
    assert e._refs["me"].rate == 16_000 and abs(len(e._refs["me"].samples) / 16_000 - 1.8) < 0.01
    before = prepared(server, "f5_tts_upstream")
    a, _ = speak(e, v)
    b, _ = speak(e, v)
    assert len(a) == len(b) > 24_000
    assert e.references_sent == 2  # upstream's layout carries the reference every time
    assert prepared(server, "f5_tts_upstream") == before + 1  # our model still prepares it once


def test_our_model_answers_upstreams_own_client_request(server, tiny):
    """What upstream's client_grpc.py sends (reference with every request, no voice_id)."""
    import soundfile as sf
    import tritonclient.grpc as grpc

    wav, sr = sf.read(str(tiny["ref"]), dtype="float32")
    import soxr

    samples = soxr.resample(wav, sr, 24_000).astype(np.float32).reshape(1, -1)
    inputs = [
        grpc.InferInput("reference_wav", samples.shape, "FP32"),
        grpc.InferInput("reference_wav_len", [1, 1], "INT32"),
        grpc.InferInput("reference_text", [1, 1], "BYTES"),
        grpc.InferInput("target_text", [1, 1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(samples)
    inputs[1].set_data_from_numpy(np.array([[samples.shape[1]]], dtype=np.int32))
    inputs[2].set_data_from_numpy(np.array([[f5_tiny.REF_TEXT]], dtype=object))
    inputs[3].set_data_from_numpy(np.array([[TEXT]], dtype=object))
    client = grpc.InferenceServerClient(server.url)
    audio = client.infer("f5_tts", inputs, outputs=[grpc.InferRequestedOutput("waveform")]).as_numpy("waveform")
    assert audio.dtype == np.float32 and audio.shape[0] == 1 and audio.shape[1] > 24_000


def test_dynamic_batcher_gathers_concurrent_daemons(server, tiny, tmp_path):
    import tritonclient.grpc as grpc

    daemons = [connect(server.url, tmp_path / str(i), tiny, model="f5_tts") for i in range(4)]
    for e, v in daemons:
        speak(e, v, "Warm.")  # voices prepared: the batches below are requests by voice_id alone
    client = grpc.InferenceServerClient(server.url)

    def batches() -> dict[int, int]:
        stats = client.get_inference_statistics("f5_tts", as_json=True)["model_stats"][0]
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])}

    before = batches()
    threads = [threading.Thread(target=speak, args=(e, v, TEXT)) for e, v in daemons]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = batches()
    grown = {size for size, n in after.items() if n > before.get(size, 0)}
    assert max(grown) >= 2, f"four concurrent requests never shared a batch: {before} -> {after}"


def test_the_daemon_speaks_through_our_streaming_model(server, tiny, tmp_path):
    with DaemonProcess(tmp_path, ts.daemon_config(server.port, "f5_tts_stream", tiny["ref"])) as d:
        eng = d.request("status")["engine"]
        assert eng["active"] == "triton" and not eng["down"]
        assert eng["engines"]["triton"]["streaming"] and eng["engines"]["triton"]["layout"] == "ishowtts"
        d.request("say", {"text": "Hello there, how are you today? I am fine."})
        d.request("say", {"text": "A second line, through the same voice."})
        log = ts.wait_said(d, tmp_path / "out", 2)
        assert [r["engine"] for r in log] == ["triton", "triton"] and all(r["sample_rate"] == 24_000 for r in log)
        assert log[0]["chunks"] >= 2  # the first sentence came first
        for r in log:
            with wave.open(str(tmp_path / "out" / r["file"])) as w:
                assert w.getframerate() == 24_000 and w.getnframes() / 24_000 == pytest.approx(r["audio_s"], abs=0.01)
        checks = {c["check"]: c for c in d.request("health")["checks"]}
        assert checks["triton:server"]["level"] == "ok"
        assert checks["triton:speed"]["data"]["requests"] == 2 and checks["triton:speed"]["data"]["references_sent"] == 1
        st = d.request("status")["engine"]
        assert {c["check"] for c in st["checks"]} >= {"triton:server", "triton:speed"}


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("dtype", "waveform of INT32, expected FP32"),
        ("shape", "shape [2, 24000]"),
        ("empty", "empty waveform"),
        ("nan", "NaN or infinite"),
        ("huge", "max_audio_s"),
        ("loud", "within [-1, 1]"),
        ("missing", "without a waveform"),
        ("error", "the model broke"),
        ("slow", "timeout_s (1 s)"),
    ],
)
def test_a_bad_answer_is_a_clear_error(server, tiny, tmp_path, mode, expected):
    e, v = connect(server.url, tmp_path, tiny, model="faulty", timeout_s=1, max_audio_s=60)
    assert len(speak(e, v, "ok fine")[0]) == 24_000
    with pytest.raises(EngineUnavailable, match=re.escape(expected)):
        speak(e, v, f"{mode} now")
    checks = {c["check"]: c for c in e.health_checks()}
    assert checks["triton:server"]["level"] == "fail" and expected in checks["triton:server"]["reason"]


def test_model_not_ready_and_back(server, tiny, tmp_path):
    import tritonclient.grpc as grpc

    e, v = connect(server.url, tmp_path, tiny, model="faulty", retry_s=0.1)
    client = grpc.InferenceServerClient(server.url)
    client.unload_model("faulty")
    try:
        with pytest.raises(EngineUnavailable, match="model 'faulty' is not ready"):
            speak(e, v, "ok")
        with pytest.raises(EngineUnavailable, match="model 'faulty' is not ready"):
            e.probe()
    finally:
        client.load_model("faulty")
    e.probe()
    assert len(speak(e, v, "ok")[0]) == 24_000


def test_server_down_and_wrong_model(server, tiny, tmp_path):
    with pytest.raises(EngineUnavailable, match=r"cannot reach the server at 127\.0\.0\.1:\d+ .*Connection refused"):
        engine(f"127.0.0.1:{ts.free_port()}", tmp_path, connect_timeout_s=2).load(lambda s, f: None)
    with pytest.raises(EngineUnavailable, match="model 'nosuch' is not ready"):
        engine(server.url, tmp_path, model="nosuch").load(lambda s, f: None)
    with pytest.raises(EngineError, match="layout = 'upstream' but model 'f5_tts' has the ishowtts layout"):
        engine(server.url, tmp_path, layout="upstream").load(lambda s, f: None)
    with pytest.raises(EngineError, match='streaming = "on" but model \'f5_tts\' is not decoupled'):
        engine(server.url, tmp_path, streaming="on").load(lambda s, f: None)


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """The faulty model (it starts in a second) behind TLS and Triton's restricted-protocol header."""
    ts.require_server()
    root = tmp_path_factory.mktemp("triton-tls")
    certs = make_certificates(root)
    ts.add_faulty(root / "models")
    args = ("--grpc-use-ssl=true", f"--grpc-server-cert={certs['server']}", f"--grpc-server-key={certs['key']}",
            "--grpc-restricted-protocol=inference,health,metadata,model-config:authorization=Bearer s3cret-t0ken")  # fmt: skip
    with ts.TritonServer(root / "models", root / "server.log", args=args) as srv:
        yield srv, certs


def make_certificates(root: Path) -> dict[str, Path]:
    """A CA, a server certificate it signed for 127.0.0.1 and localhost, and an unrelated CA."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=root, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out", "other.pem", "-days", "2", "-subj", "/CN=other")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (root / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem",
        "-days", "2", "-extfile", "san.cnf")  # fmt: skip
    return {"ca": root / "ca.pem", "other": root / "other.pem", "server": root / "server.pem", "key": root / "server.key"}


def test_tls_and_token(tls_server, tiny, tmp_path, monkeypatch, caplog):
    srv, certs = tls_server
    token = tmp_path / "token"
    token.write_text("s3cret-t0ken\n")
    header = "triton-grpc-protocol-authorization"  # Triton's restricted protocol prefixes the key
    good = dict(model="faulty", tls=True, root_certificates=str(certs["ca"]), auth_header=header, connect_timeout_s=3)
    caplog.set_level(logging.DEBUG)
    e, v = connect(srv.url, tmp_path, tiny, token_file=str(token), **good)
    assert len(speak(e, v, "ok")[0]) == 24_000
    assert e.info()["auth"] == f"token from file {token}"
    monkeypatch.setenv("TRITON_TOKEN", "s3cret-t0ken")
    e, v = connect(srv.url, tmp_path, tiny, token_env="TRITON_TOKEN", **good)
    assert len(speak(e, v, "ok")[0]) == 24_000

    errors = []
    for what, kw, expected in [
        ("wrong CA", {**good, "root_certificates": str(certs["other"])}, "TLS handshake with"),
        ("no TLS", {**good, "tls": False}, "cannot reach the server"),
        ("wrong token", {**good, "token_env": "WRONG"}, "'triton-grpc-protocol-authorization' header is missing or wrong (token_env WRONG)"),
        ("no token", good, "header is missing or wrong (no token configured)"),
        ("proxy header", {**good, "auth_header": "authorization", "token_file": str(token)},
         "it expects the header 'triton-grpc-protocol-authorization'"),
    ]:  # fmt: skip
        monkeypatch.setenv("WRONG", "not-the-token")
        with pytest.raises(EngineUnavailable, match=re.escape(expected)) as err:
            engine(srv.url, tmp_path, **kw).load(lambda s, f: None)
        errors.append(f"{what}: {err.value}")
    assert "s3cret" not in "\n".join(errors) + caplog.text, "the token leaked into an error or the log"


def test_settings_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("NOPE", raising=False)
    with pytest.raises(EngineError, match="token: environment variable NOPE is not set"):
        engine("127.0.0.1:1", tmp_path, token_env="NOPE").load(lambda s, f: None)
    with pytest.raises(EngineError, match=r"\[engine.triton\] token: cannot read .*missing"):
        engine("127.0.0.1:1", tmp_path, token_file=str(tmp_path / "missing")).load(lambda s, f: None)
    with pytest.raises(EngineError, match="root_certificates .* does not exist"):
        engine("127.0.0.1:1", tmp_path, tls=True, root_certificates=str(tmp_path / "ca.pem")).load(lambda s, f: None)


def test_bench_runs_against_the_server(server, tiny, tmp_path, capsys):
    """The benchmark script (not a timed test): local engine vs the same tiny weights on the server."""
    from ishowttsd.bench import main

    cfg = tmp_path / "bench.toml"
    cfg.write_text(f5_tiny.engine_table(tiny))
    out = tmp_path / "bench.json"
    args = ["--engine", "triton", "--url", server.url, "--config", str(cfg), "--concurrency", "1,2", "--utterances", "2"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["same_audio"] for r in result["overhead"]] == [True, True]  # the same weights on both sides
    assert [lv["streams"] for lv in result["concurrency"]] == [1, 2]
    s = result["summary"]
    assert s["remote_overhead"] is not None and s["cpu_flags"] is not None and s["server_model"] == "f5_tts_stream"
    assert "remote overhead" in capsys.readouterr().out
