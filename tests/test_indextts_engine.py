"""The IndexTTS2 engine on tiny random-weight models saved in the real formats and folder layouts."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("indextts")

import indextts_tiny  # noqa: E402

from ishowttsd.engines.base import EngineContext, EngineError, Voice  # noqa: E402
from ishowttsd.engines.kernels import rel_error  # noqa: E402
from ishowttsd.engines.indextts import IndexTTSEngine, IndexTTSSettings  # noqa: E402
from ishowttsd.engines.indextts import bench as ibench  # noqa: E402
from ishowttsd.engines.indextts import voices as V  # noqa: E402

TEXT = "Hello there, how are you today?"


class _Cfg:
    def resolve(self, p: str) -> Path:
        return Path(p)


@pytest.fixture(scope="session")
def tiny():
    return indextts_tiny.build()


def make(model_dir: Path, state: Path, **kw) -> IndexTTSEngine:
    table = {"model_dir": str(model_dir), "normalize": False, "max_mel_tokens": 40, **kw}
    return IndexTTSEngine(IndexTTSSettings(**table), EngineContext(config=_Cfg(), state_dir=state))


def voice(tiny, vid: str = "me", ref: Path | None = None, **options) -> Voice:
    return Voice(id=vid, engine="indextts", reference_audio=str(ref or tiny["ref"]), options=options)


@pytest.fixture(scope="module")
def engine(tiny, tmp_path_factory):
    e = make(tiny["dir"], tmp_path_factory.mktemp("state"))
    e.load(lambda *_: None)
    e.add_voice(voice(tiny))
    return e


def speak(e: IndexTTSEngine, text: str, v: Voice | None = None) -> np.ndarray:
    return np.concatenate([c.samples for c in e.synthesize(text, v or e.voices()[0], threading.Event())])


def linked_copy(src: Path, dst: Path) -> Path:
    """The model folder as links (the files are large), so a test can replace one of them."""
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).symlink_to(p, target_is_directory=p.is_dir())
    return dst


# -- loading ---------------------------------------------------------------------------------------


def test_loads_through_the_real_loaders_with_the_hub_offline(engine):
    assert engine.loaded
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    import huggingface_hub.constants as c
    from indextts.gpt.model_v2 import UnifiedVoice
    from indextts.s2mel.modules.commons import MyModel
    from transformers import Wav2Vec2BertModel

    assert c.HF_HUB_OFFLINE is True
    m = engine.models
    assert isinstance(m.gpt, UnifiedVoice) and isinstance(m.s2mel, MyModel) and isinstance(m.semantic_model, Wav2Vec2BertModel)
    assert len(m.semantic_model.encoder.layers) == 17  # only up to the layer upstream reads
    info = engine.info()
    assert info["device"] == "cpu" and info["dtype"] == "fp32" and info["diffusion_steps"] == 25 and info["num_beams"] == 1


def test_a_seeded_run_equals_upstream_infer(engine, tiny, tmp_path):
    """Same weights, reference, text, seed and sampling: upstream's IndexTTS2.infer() (built by its
    own loaders from a hub cache of links, hub offline) and our engine give the same codes and
    the same audio (to one 16-bit step)."""
    up = ibench.build_upstream(engine.paths.model_dir, engine.paths.folders, "cpu", False, tmp_path)
    seen = []
    orig = up.gpt.inference_speech
    up.gpt.inference_speech = lambda *a, **k: seen.append(orig(*a, **k)) or seen[-1]
    for text in (TEXT, "主播今天状态真好！"):
        seen.clear()
        sr, wav = ibench.upstream_infer(up, tiny["ref"], text, 0, 40)
        ours = speak(engine, text)
        assert sr == 22050
        want = [int(x) for x in seen[0][0][0].tolist() if int(x) != engine.models.gpt.stop_mel_token]
        assert engine.last_codes == [want]
        assert len(ours) == len(wav) and np.abs(ours - wav[:, 0] / 32767).max() < 3 / 32767


def test_s2mel_velocity_equals_upstream_estimator(engine):
    est = engine.models.s2mel.models["cfm"].estimator
    g = torch.Generator().manual_seed(0)
    T, P = 40, 12
    x, mu = torch.randn(1, 80, T, generator=g), torch.randn(1, T, 32, generator=g)
    prompt, style = torch.randn(1, 80, P, generator=g), torch.randn(1, 192, generator=g)
    t = torch.tensor(0.37)
    with torch.inference_mode():
        px = torch.zeros_like(x)
        px[..., :P] = prompt
        out = est(torch.cat([x, x]), torch.cat([px, torch.zeros_like(px)]), torch.tensor([T]), torch.stack([t, t]),
                  torch.cat([style, torch.zeros_like(style)]), torch.cat([mu, torch.zeros_like(mu)]))  # fmt: skip
        c, u = out.chunk(2)
        want = 1.7 * c - 0.7 * u
        engine._s2mel.prepare(mu, prompt, style)
        got = engine._s2mel.velocity(x.transpose(1, 2), t, 0.7).transpose(1, 2)
        engine._s2mel.clear()
    assert want.abs().mean() > 0.01
    assert rel_error(got, want) < 1e-4


def test_missing_truncated_and_mismatched_files(tiny, tmp_path):
    with pytest.raises(EngineError, match="no model folder configured"):
        IndexTTSEngine(IndexTTSSettings(), EngineContext(config=_Cfg(), state_dir=tmp_path)).load(lambda *_: None)
    d = linked_copy(tiny["dir"], tmp_path / "m")
    (d / "gpt.pth").unlink()
    with pytest.raises(EngineError, match=r"m/gpt.pth does not exist \(gpt_checkpoint in config.yaml\)"):
        make(d, tmp_path).load(lambda *_: None)
    (d / "gpt.pth").write_bytes(tiny["gpt"].read_bytes()[:4000])
    with pytest.raises(EngineError, match=r"cannot read .*gpt.pth .*truncated or not an IndexTTS2 GPT checkpoint"):
        make(d, tmp_path).load(lambda *_: None)
    (d / "gpt.pth").unlink()
    (d / "gpt.pth").symlink_to(tiny["gpt"])
    (d / "config.yaml").unlink()
    (d / "config.yaml").write_text(tiny["config"].read_text().replace("layers: 1", "layers: 2"))
    with pytest.raises(EngineError, match=r"gpt.pth does not fit the GPT of config.yaml: \d+ weights missing \(e.g. gpt.h.1"):
        make(d, tmp_path).load(lambda *_: None)
    (d / "config.yaml").unlink()
    (d / "config.yaml").symlink_to(tiny["config"])
    (d / "w2v-bert-2.0").unlink()
    with pytest.raises(EngineError, match=r"w2v-bert-2.0 has no config.json; set \[engine.indextts\] w2v_bert .*facebook/w2v-bert-2.0"):
        make(d, tmp_path).load(lambda *_: None)
    bad = tmp_path / "bigvgan"
    bad.mkdir()
    (bad / "config.json").write_text((tiny["bigvgan"] / "config.json").read_text())
    (bad / "bigvgan_generator.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match=r"BigVGAN folder .*bigvgan does not load"):
        make(tiny["dir"], tmp_path, bigvgan=str(bad)).load(lambda *_: None)


def test_bad_voice_files_and_options(engine, tiny, tmp_path):
    with pytest.raises(EngineError, match=r"voice 'x': reference_audio .*none.wav does not exist"):
        engine.add_voice(voice(tiny, "x", tmp_path / "none.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_text("hello")
    with pytest.raises(EngineError, match="junk.wav is not readable audio"):
        engine.add_voice(voice(tiny, "x", junk))
    import soundfile as sf

    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(22050, np.float32), 22050)
    with pytest.raises(EngineError, match="is silent"):
        engine.add_voice(voice(tiny, "x", silent))
    with pytest.raises(EngineError, match=r"options.emo_vector: .*needs 8 values"):
        engine.add_voice(voice(tiny, "x", emo_vector=[0.5] * 7))
    with pytest.raises(EngineError, match=r"add up to 1.60"):
        engine.add_voice(voice(tiny, "x", emo_vector=[0.2] * 8))
    with pytest.raises(EngineError, match="choose one emotion source, not emo_audio and emo_vector"):
        engine.add_voice(voice(tiny, "x", emo_audio=str(tiny["emo_ref"]), emo_vector=[0.1] * 8))
    with pytest.raises(EngineError, match=r"options.emo_aplha: Extra inputs"):
        engine.add_voice(voice(tiny, "x", emo_aplha=0.5))
    with pytest.raises(EngineError, match=r"options.emo_audio .*nope.wav does not exist"):
        engine.add_voice(voice(tiny, "x", emo_audio=str(tmp_path / "nope.wav")))
    assert "x" not in {v.id for v in engine.voices()}


# -- the voice cache ----------------------------------------------------------------------------------


def test_voice_cache_hit_miss_invalidation(tiny, tmp_path):
    ref = tmp_path / "ref.wav"
    ref.write_bytes(tiny["ref"].read_bytes())
    state = tmp_path / "state"
    e = make(tiny["dir"], state)
    e.load(lambda *_: None)
    e.add_voice(voice(tiny, ref=ref))
    assert e._cache.stats == {"memory": 0, "disk": 0, "miss": 1}
    assert len(list((state / "indextts-voices").glob("*.npz"))) == 1
    latent = e._prepared["me"]["speaker"].cond_latent.clone()
    e.add_voice(voice(tiny, ref=ref))  # reload, unchanged: memory
    assert e._cache.stats["memory"] == 1
    a = speak(e, TEXT)
    e2 = make(tiny["dir"], state)  # a restart: from disk, the same conditioning and speech
    e2.load(lambda *_: None)
    e2.add_voice(voice(tiny, ref=ref))
    assert e2._cache.stats == {"memory": 0, "disk": 1, "miss": 0}
    assert torch.equal(e2._prepared["me"]["speaker"].cond_latent, latent)
    assert np.array_equal(speak(e2, TEXT), a)
    indextts_tiny.write_reference(ref, seconds=1.5, seed=3)  # the streamer records a new reference
    e2.add_voice(voice(tiny, ref=ref))
    assert e2._cache.stats["miss"] == 1
    assert not torch.equal(e2._prepared["me"]["speaker"].cond_latent, latent)
    d = linked_copy(tiny["dir"], tmp_path / "m")  # other weights (another campplus file): another key
    (d / "campplus").unlink()
    shutil.copytree(tiny["campplus"], d / "campplus")
    os.utime(d / "campplus" / "campplus_cn_common.bin", (1, 1))
    e3 = make(d, state)
    e3.load(lambda *_: None)
    e3.add_voice(voice(tiny, ref=ref))
    assert e3._cache.stats == {"memory": 0, "disk": 0, "miss": 1}


# -- emotion, determinism, streaming ------------------------------------------------------------------


def test_emotion_settings_reach_the_model_and_seeds_repeat(engine, tiny):
    plain = speak(engine, TEXT)
    assert np.array_equal(plain, speak(engine, TEXT)) and np.abs(plain).max() > 0  # same seed, same audio
    happy = engine.add_voice(voice(tiny, "happy", emo_vector=[0.8, 0, 0, 0, 0, 0, 0, 0]))
    conds = {k: engine._prepared[k]["conds"] for k in ("me", "happy")}
    assert not torch.equal(conds["me"], conds["happy"])  # the vector reaches the GPT's conditioning
    a = speak(engine, TEXT, happy)
    assert not np.array_equal(a[: len(plain)], plain[: len(a)])
    assert np.array_equal(a, speak(engine, TEXT, happy))
    # emo_alpha scales the vector as upstream does: at 0 only the speaker's own emotion remains
    zero = engine.add_voice(voice(tiny, "zero", emo_vector=[0.8, 0, 0, 0, 0, 0, 0, 0], emo_alpha=0.0))
    assert torch.allclose(engine._prepared["zero"]["conds"], conds["me"])
    assert np.array_equal(speak(engine, TEXT, zero), plain)
    moody = engine.add_voice(voice(tiny, "moody", emo_audio=str(tiny["emo_ref"]), emo_alpha=0.7))
    assert not torch.equal(engine._prepared["moody"]["conds"], conds["me"])
    assert "emotion from emo_audio" in moody.description
    # a text description goes through the Qwen emotion model (loaded only now) to 8 weights
    assert engine.qwen is None
    told = engine.add_voice(voice(tiny, "told", emo_text="开心"))
    assert engine.qwen is not None and engine.info()["emotion_model"]
    vec = engine.text_emotion("开心")
    assert len(vec) == 8 and all(0 <= x <= 1.2 for x in vec) and sum(vec) > 0
    assert torch.allclose(engine._prepared["told"]["conds"], engine._conds(engine._prepared["told"]["speaker"], V.vector_emovec(
        engine.models, engine._prepared["told"]["speaker"], vec)))  # fmt: skip
    assert len(speak(engine, TEXT, told)) > 0
    per_text = engine.add_voice(voice(tiny, "per_text", emo_from_text=True))
    assert engine._prepared["per_text"]["conds"] is None and len(speak(engine, "谢谢老板！", per_text)) > 0


def test_emotion_answers_are_read_as_upstream_reads_them(engine, tiny):
    engine._load_qwen()
    q = engine.qwen
    assert V.parse_emotion(q, '{"高兴": 0.8, "惊讶": 0.3, "自然": 0.1}', "太好了") == [0.8, 0, 0, 0, 0, 0, 0.3, 0.1]
    assert V.parse_emotion(q, '高兴: 2.5, 悲伤: 0.2', "I feel gloomy") == [1.2, 0, 0, 0, 0, 0.2, 0, 0]  # clamped; sad/melancholic swapped
    assert V.parse_emotion(q, "no idea", "hm") == [0, 0, 0, 0, 0, 0, 0, 1.0]  # nothing detected: calm


def test_streaming_first_sentence_alone_then_the_rest(engine):
    text = "Hello there. How are you today? Thanks for the stream!"
    segs = engine.plan(text)
    assert len(segs) == 2 and segs[0][-1] in (".", "▁.")
    chunks = list(engine.synthesize(text, engine.voices()[0], threading.Event()))
    assert len(chunks) == 3 and not np.any(chunks[1].samples)  # speech, 200 ms of silence, speech
    assert len(chunks[1].samples) == int(0.2 * 22050)
    assert len(engine.last_codes) == 2
    for chunk, codes in zip((chunks[0], chunks[2]), engine.last_codes):
        assert len(chunk.samples) == int(len(codes) * 1.72) * 256  # 1.72 mel frames per code, 256 samples per frame
    # cancelled after the first segment: nothing more comes
    cancel = threading.Event()
    got = []
    for c in engine.synthesize(text, engine.voices()[0], cancel):
        got.append(c)
        cancel.set()
    assert len(got) == 1


def test_fast_mode_runs_with_a_bounded_deviation(engine, tiny, tmp_path):
    fe = make(tiny["dir"], tmp_path, fast=True, fast_mode="int8")
    fe.load(lambda *_: None)
    assert fe.info()["dtype"] == "int8-dynamic" and fe.kernel_kind == "int8"
    fe.add_voice(voice(tiny))
    speak(engine, TEXT)
    assert len(speak(fe, TEXT)) > 0
    codes = engine.last_codes
    err = rel_error(ibench.teacher_forced_mel(fe, TEXT, codes, "me"), ibench.teacher_forced_mel(engine, TEXT, codes, "me"))
    assert 0 < err < 0.5


def test_example_config_validates():
    import subprocess
    import sys
    import tomllib

    example = Path(__file__).resolve().parent.parent / "config" / "example-indextts.toml"
    r = subprocess.run([sys.executable, "-m", "ishowttsd", "--config", str(example), "--check-config"], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD="1"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    voices = tomllib.loads(example.read_text())["voices"]
    assert len(voices) >= 3
    for v in voices:
        V.parse_options(v["id"], v.get("options", {}))
