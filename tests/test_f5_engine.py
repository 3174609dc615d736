"""The F5-TTS engine on tiny random-weight models saved in the real checkpoint formats."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("f5_tts")

import f5_tiny  # noqa: E402

from ishowttsd.engines.base import EngineContext, EngineError, Voice  # noqa: E402
from ishowttsd.engines.f5 import F5Engine, F5Settings, _Job, crossfade_join, normalize_ref_text, rel_error, split_chunks, time_grid  # noqa: E402
from ishowttsd.hardware import cpu_has_bf16  # noqa: E402


class _Cfg:
    def resolve(self, p: str) -> Path:
        return Path(p)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return f5_tiny.build(tmp_path_factory.mktemp("f5tiny"))


def make(tiny, state: Path, **kw) -> F5Engine:
    table = dict(model="tiny", arch=f5_tiny.TINY_ARCH, checkpoint=str(tiny["safetensors"]), vocab=str(tiny["vocab"]),
                 vocoder=str(tiny["vocos"]))  # fmt: skip
    table.update(kw)
    return F5Engine(F5Settings(**table), EngineContext(config=_Cfg(), state_dir=state))


def voice(tiny, ref: Path | None = None, text: str = f5_tiny.REF_TEXT, vid: str = "me") -> Voice:
    return Voice(id=vid, engine="f5", reference_audio=str(ref or tiny["ref"]), reference_text=text)


@pytest.fixture(scope="module")
def engine(tiny, tmp_path_factory):
    e = make(tiny, tmp_path_factory.mktemp("state"))
    e.load(lambda *_: None)
    e.add_voice(voice(tiny))
    return e


def speak(e: F5Engine, text: str, v: Voice | None = None) -> np.ndarray:
    v = v or e.voices()[0]
    return np.concatenate([c.samples for c in e.synthesize(text, v, threading.Event())])


# -- loading -------------------------------------------------------------------------------


def _param(e: F5Engine) -> torch.Tensor:
    return e.model.transformer.proj_out.weight.detach().clone()


@pytest.mark.parametrize("fmt,use_ema,expect_zero", [
    ("safetensors", True, False), ("plain", True, False), ("pt", True, False), ("pt", False, True),
])  # fmt: skip
def test_loads_real_formats(tiny, tmp_path, fmt, use_ema, expect_zero):
    e = make(tiny, tmp_path, checkpoint=str(tiny[fmt]), use_ema=use_ema)
    stages = []
    e.load(lambda stage, frac: stages.append((stage, frac)))
    assert e.loaded and stages[-1] == ("f5 ready", 1.0)
    w = _param(e)
    # the .pt's non-EMA weights are all zero: use_ema picks the EMA set, use_ema=false the plain one
    assert bool((w == 0).all()) is expect_zero
    if not expect_zero:
        ref = make(tiny, tmp_path)
        ref.load(lambda *_: None)
        assert torch.equal(w, _param(ref))


def test_missing_and_truncated_checkpoint(tiny, tmp_path):
    e = make(tiny, tmp_path, checkpoint=str(tmp_path / "nope.safetensors"))
    with pytest.raises(EngineError, match="nope.safetensors does not exist"):
        e.load(lambda *_: None)
    for src in ("safetensors", "pt"):
        data = tiny[src].read_bytes()
        cut = tmp_path / f"cut.{tiny[src].suffix.lstrip('.')}"
        cut.write_bytes(data[: len(data) // 2])
        e = make(tiny, tmp_path, checkpoint=str(cut))
        with pytest.raises(EngineError, match=r"cannot read checkpoint .*cut.*truncated"):
            e.load(lambda *_: None)


def test_wrong_architecture_and_vocab(tiny, tmp_path):
    e = make(tiny, tmp_path, arch={**f5_tiny.TINY_ARCH, "depth": 3})
    with pytest.raises(EngineError, match=r"does not fit the tiny architecture: 1\d* weights missing"):
        e.load(lambda *_: None)
    e = make(tiny, tmp_path, arch={**f5_tiny.TINY_ARCH, "dim": 96})
    with pytest.raises(EngineError, match="of another shape"):
        e.load(lambda *_: None)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text(tiny["vocab"].read_text() + "extra\n")
    e = make(tiny, tmp_path, vocab=str(vocab))
    with pytest.raises(EngineError, match=rf"vocab {vocab} has 103 tokens but checkpoint .* trained with 102"):
        e.load(lambda *_: None)
    vocab.write_text("a\na\nb\n")
    with pytest.raises(EngineError, match="duplicate tokens"):
        make(tiny, tmp_path, vocab=str(vocab)).load(lambda *_: None)
    with pytest.raises(EngineError, match="vocab file .*missing.txt does not exist"):
        make(tiny, tmp_path, vocab=str(tmp_path / "missing.txt")).load(lambda *_: None)


def test_vocoder_errors(tiny, tmp_path):
    bad = tmp_path / "voc"
    bad.mkdir()
    (bad / "config.yaml").write_text((tiny["vocos"] / "config.yaml").read_text())
    with pytest.raises(EngineError, match=r"voc has no pytorch_model.bin"):
        make(tiny, tmp_path, vocoder=str(bad)).load(lambda *_: None)
    (bad / "pytorch_model.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match=r"vocoder weights .*pytorch_model.bin do not load"):
        make(tiny, tmp_path, vocoder=str(bad)).load(lambda *_: None)
    with pytest.raises(EngineError, match="no checkpoint configured"):
        make(tiny, tmp_path, checkpoint=None).load(lambda *_: None)


def test_bad_voice_files(engine, tiny, tmp_path):
    with pytest.raises(EngineError, match=r"voice 'x': reference_audio .*none.wav does not exist"):
        engine.add_voice(voice(tiny, tmp_path / "none.wav", vid="x"))
    junk = tmp_path / "junk.wav"
    junk.write_text("hello")
    with pytest.raises(EngineError, match=r"junk.wav is not readable audio"):
        engine.add_voice(voice(tiny, junk, vid="x"))
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(24000, np.float32), 24000)
    with pytest.raises(EngineError, match="is silent"):
        engine.add_voice(voice(tiny, silent, vid="x"))
    with pytest.raises(EngineError, match="needs reference_audio .* and reference_text"):
        engine.add_voice(voice(tiny, text=" ", vid="x"))


# -- reference cache ---------------------------------------------------------------------------


def test_reference_cache_hit_miss_invalidation(tiny, tmp_path):
    ref = tmp_path / "ref.wav"
    ref.write_bytes(tiny["ref"].read_bytes())
    state = tmp_path / "state"
    e = make(tiny, state)
    e.load(lambda *_: None)
    e.add_voice(voice(tiny, ref))
    assert e.cache_stats == {"memory": 0, "disk": 0, "miss": 1}
    assert len(list((state / "f5-voices").glob("*.npz"))) == 1
    mel = e._refs["me"].mel.clone()
    e.add_voice(voice(tiny, ref))  # reload, unchanged: memory
    assert e.cache_stats["memory"] == 1
    e2 = make(tiny, state)  # a restart: from disk, same mel
    e2.load(lambda *_: None)
    e2.add_voice(voice(tiny, ref))
    assert e2.cache_stats == {"memory": 0, "disk": 1, "miss": 0}
    assert torch.equal(e2._refs["me"].mel, mel)
    f5_tiny.write_reference(ref, seconds=1.5, seed=3)  # the streamer records a new reference
    e2.add_voice(voice(tiny, ref))
    assert e2.cache_stats["miss"] == 1
    assert e2._refs["me"].mel.shape[0] > mel.shape[0]
    e2.add_voice(voice(tiny, ref, text="Another transcript."))  # an edited transcript is a new key
    assert e2.cache_stats["miss"] == 2
    e3 = make(tiny, state, target_rms=0.2)  # other preparation settings: another key
    e3.load(lambda *_: None)
    e3.add_voice(voice(tiny, ref))
    assert e3.cache_stats["miss"] == 1


def test_reference_is_trimmed_resampled_normalised(engine, tiny):
    ref = engine._refs["me"]
    # 1.2 s of sound with 0.3 s silence each side, at 16 kHz: trimmed to about 1.3 s at 24 kHz
    assert 1.2 <= ref.seconds <= 1.35
    assert ref.mel.shape == (int(ref.seconds * 24000) // 256 + 1, 100)
    assert ref.text.endswith(".  ")  # upstream's form: ". " from its preprocessing, " " from its inference


@pytest.mark.parametrize("given,fed", [
    ("Some call me nature", "Some call me nature.  "),
    ("Some call me nature.", "Some call me nature.  "),
    ("Some call me nature. ", "Some call me nature.  "),
    ("你好，我是主播。", "你好，我是主播。"),
    ("你好", "你好.  "),
])  # fmt: skip
def test_reference_text_is_fed_as_upstream_feeds_it(given, fed):
    assert normalize_ref_text(given) == fed


def test_durations_equal_upstreams(engine, tiny, monkeypatch):
    """Same reference, same text: upstream's F5TTS.infer() asks its sampler for the same number
    of frames as we do (the speech rate comes from the transcript's bytes per reference frame)."""
    from ishowttsd.bench import f5 as bench

    table = {"model": "tiny", "arch": f5_tiny.TINY_ARCH, "checkpoint": str(tiny["safetensors"]),
             "vocab": str(tiny["vocab"]), "vocoder": str(tiny["vocos"])}  # fmt: skip
    up = bench._upstream_call(bench.build_upstream, table, "cpu")
    asked = []
    sample = up.ema_model.sample
    up.ema_model.sample = lambda *a, **k: asked.append(int(k["duration"])) or sample(*a, **k)
    text = "Hello there, how are you?"
    # upstream's seed_everything writes PYTHONHASHSEED into os.environ: restored after the test
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    bench._upstream_call(up.infer, str(tiny["ref"]), "Hello there.", text, show_info=bench._quiet, progress=None,
                         nfe_step=1, seed=0)  # fmt: skip
    e_voice = voice(tiny, vid="dur", text="Hello there.")
    engine.add_voice(e_voice)
    _, ours = engine._duration(_Job(0, 0, text, engine._refs["dur"], 1.0))
    assert abs(ours - asked[0]) <= 1, (ours, asked)


# -- hot path ------------------------------------------------------------------------------------


def test_fast_velocity_equals_upstream_dit(engine):
    dit = engine.model.transformer
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(1, 70, 100, generator=g), torch.randn(1, 70, 100, generator=g)
    text = torch.randint(0, 90, (1, 25), generator=g)
    with torch.inference_mode():
        out = dit(x=x, cond=cond, text=text, time=torch.tensor(0.4), cfg_infer=True, cache=False)
        pred, null = out.chunk(2)
        want = pred + (pred - null) * 2.0
        engine._fast.prepare(cond, text, None)
        got = engine._fast.velocity(x, torch.tensor(0.4), 2.0)
        engine._fast.clear()
    assert want.abs().mean() > 0.01  # random weights: a real velocity, not zeros
    assert rel_error(got, want) < 1e-3


def test_time_grid_is_epss():
    t = time_grid(7, None)
    assert torch.allclose(t * 32, torch.tensor([0, 2, 4, 6, 8, 16, 24, 32.0]))
    assert len(time_grid(9, -1.0)) == 10


def test_seeded_runs_are_deterministic(engine):
    a = speak(engine, "Hello there, how are you?")
    b = speak(engine, "Hello there, how are you?")
    assert np.array_equal(a, b) and np.abs(a).max() > 0


def test_duration_follows_the_reference_rate(engine):
    text = "Hello there, how are you?"
    ref = engine._refs["me"]
    hops = ref.mel.shape[0] - 1  # upstream's reference length: samples // hop
    total = hops + int(hops / len(ref.text.encode()) * len(text.encode()))
    assert len(speak(engine, text)) == (total - ref.mel.shape[0]) * 256  # the reference's own frames are not spoken


def test_batch_equals_one_by_one(engine, monkeypatch):
    monkeypatch.setattr(engine.settings, "max_batch", 8)  # one padded pass (auto is 1 on CPU)
    texts = ["Hello there, how are you?", "Good game, well played everyone!", "ni3 hao3 zhu3 bo1, how is it going today?"]
    solo = [speak(engine, t) for t in texts]
    v = engine.voices()[0]
    batched = engine.synthesize_batch(texts, [v] * 3)
    assert [len(b) for b in batched] == [len(s) for s in solo]
    assert len({len(s) for s in solo}) == 3  # different lengths: padding is exercised
    for b, s in zip(batched, solo):
        assert np.abs(b - s).max() <= 1e-3 * max(1e-3, np.abs(s).max())


def test_chunked_streaming_order_and_joins(engine, monkeypatch):
    monkeypatch.setattr(engine.settings, "max_batch", 8)  # the rest as one pass (auto is 1 on CPU)
    text = "First sentence is here. The second one follows! And a third, to end it."
    chunks = engine.plan(text)
    assert chunks == ["First sentence is here.", "The second one follows!", "And a third, to end it."]
    solo = [speak(engine, c) for c in chunks]
    calls = []
    real = engine._forward

    def spy(jobs, cancel, on_step=None):
        calls.append([j.text for j in jobs])
        return real(jobs, cancel, on_step)

    monkeypatch.setattr(engine, "_forward", spy)
    seen_calls = []
    pieces = []
    for c in engine.synthesize(text, engine.voices()[0], threading.Event()):
        seen_calls.append(len(calls))
        pieces.append(c.samples)
    # the first audio leaves before the rest is synthesized; the rest runs as one batch
    assert seen_calls[0] == 1 and calls == [chunks[:1], chunks[1:]]
    xf = engine._xf()
    want = crossfade_join(crossfade_join(solo[0], solo[1], xf), solo[2], xf)
    got = np.concatenate(pieces)
    assert len(got) == sum(map(len, solo)) - 2 * xf
    assert np.abs(got - want).max() < 1e-3 * np.abs(want).max()
    assert np.array_equal(pieces[0], solo[0][:-xf])  # the first chunk streams as it was synthesized


def test_cpu_runs_one_chunk_per_pass_by_default(engine, monkeypatch):
    calls = []
    real = engine._forward
    monkeypatch.setattr(engine, "_forward", lambda jobs, cancel, on_step=None: calls.append(len(jobs)) or real(jobs, cancel, on_step))
    text = "First sentence is here. The second one follows! And a third, to end it."
    list(engine.synthesize(text, engine.voices()[0], threading.Event()))
    assert engine.settings.max_batch == "auto" and calls == [1, 1, 1]


def test_cancel_stops_synthesis(engine):
    cancel = threading.Event()
    cancel.set()
    assert list(engine.synthesize("One sentence. And another one.", engine.voices()[0], cancel)) == []


def test_split_chunks():
    assert split_chunks("你好。今天怎么样？很好！", 100) == ["你好。今天怎么样？很好！"]
    assert split_chunks("大家晚上好，欢迎来到直播间。今天我们继续挑战最高难度！", 40) == [
        "大家晚上好，", "欢迎来到直播间。", "今天我们继续挑战最高难度！"
    ]
    assert split_chunks("Hi. This is a longer sentence, ok.", 100) == ["Hi. This is a longer sentence, ok."]
    assert split_chunks("One. Two. Three four five six.", 12) == ["One. Two.", "Three four", "five six."]
    long = "a" * 50
    assert all(len(p) <= 20 for p in split_chunks(long, 20))
    assert "".join(split_chunks(long, 20)) == long


def test_warmup_reports_progress(tiny, tmp_path):
    e = make(tiny, tmp_path)
    e.load(lambda *_: None)
    seen = []
    e.warmup(lambda stage, frac: seen.append(frac))
    assert e.warm and seen[-1] == 1.0 and seen == sorted(seen) and len(seen) == 7


@pytest.mark.parametrize("mode", ["int8", "bf16"])
def test_fast_mode_deviation_is_measured(tiny, tmp_path, engine, mode):
    if mode == "bf16" and not cpu_has_bf16(torch):
        pytest.skip("this CPU has no native bf16")
    e = make(tiny, tmp_path, fast=True, fast_mode=mode)
    e.load(lambda *_: None)
    e.add_voice(voice(tiny))
    assert e.info()["dtype"] == ("bf16" if mode == "bf16" else "int8-dynamic")
    text = "Hello there, how are you?"
    fast = speak(e, text)
    speak(engine, text)
    want = torch.cat(engine.last_mel)
    err = rel_error(torch.cat(e.last_mel), want)
    assert len(fast) == len(speak(engine, text))
    assert 0 < err < 0.5
