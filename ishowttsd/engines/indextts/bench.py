"""Benchmark: our IndexTTS2 engine against upstream `IndexTTS2.infer()`, side by side.

    python -m ishowttsd.bench --engine indextts --compare-upstream --out bench.json

One process: the same weights (a configured model folder, or every component at full size with
every parameter random, saved in the release formats and loaded by both sides through their
own loaders), the same reference, the same danmaku, the same seed and sampling settings, the
same device. Upstream is built by its own `IndexTTS2` loading methods with the hub offline,
reading a hub cache made of links to the same local folders. Warm-up first, then per utterance
upstream and ours back to back; medians. Prints a table and writes JSON.

Random weights never sample the stop token, so both sides generate a fixed number of codes per
utterance (50 per second of the speech a real model would make of it, estimated from the text).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

DANMAKU = ["主播今天状态真好！", "Nice play, that was insane!", "谢谢老板的火箭，老板大气。", "Can you say hi to my friend Tom?"]
THREE_SENTENCES = "大家晚上好。今天我们继续挑战最高难度！Remember to follow if you like the stream."
CODES_PER_S = 50

# IndexTTS-2's released config.yaml (IndexTeam/IndexTTS-2), the sizes every component is built at
FULL_CONFIG: dict[str, Any] = {
    "dataset": {"bpe_model": "bpe.model", "sample_rate": 24000, "squeeze": False},
    "gpt": {
        "model_dim": 1280, "max_mel_tokens": 1815, "max_text_tokens": 600, "heads": 20, "use_mel_codes_as_input": True,
        "mel_length_compression": 1024, "layers": 24, "number_text_tokens": 12000, "number_mel_codes": 8194,
        "start_mel_token": 8192, "stop_mel_token": 8193, "start_text_token": 0, "stop_text_token": 1,
        "train_solo_embeddings": False, "condition_type": "conformer_perceiver",
        "condition_module": {"output_size": 512, "linear_units": 2048, "attention_heads": 8, "num_blocks": 6,
                             "input_layer": "conv2d2", "perceiver_mult": 2},
        "emo_condition_module": {"output_size": 512, "linear_units": 1024, "attention_heads": 4, "num_blocks": 4,
                                 "input_layer": "conv2d2", "perceiver_mult": 2},
    },
    "semantic_codec": {"codebook_size": 8192, "hidden_size": 1024, "codebook_dim": 8, "vocos_dim": 384,
                       "vocos_intermediate_dim": 2048, "vocos_num_layers": 12},
    "s2mel": {
        "preprocess_params": {"sr": 22050, "spect_params": {"n_fft": 1024, "win_length": 1024, "hop_length": 256,
                                                            "n_mels": 80, "fmin": 0, "fmax": "None"}},
        "dit_type": "DiT", "reg_loss_type": "l1", "style_encoder": {"dim": 192},
        "length_regulator": {"channels": 512, "is_discrete": False, "in_channels": 1024, "content_codebook_size": 2048,
                             "sampling_ratios": [1, 1, 1, 1], "vector_quantize": False, "n_codebooks": 1,
                             "quantizer_dropout": 0.0, "f0_condition": False, "n_f0_bins": 512},
        "DiT": {"hidden_dim": 512, "num_heads": 8, "depth": 13, "class_dropout_prob": 0.1, "block_size": 8192,
                "in_channels": 80, "style_condition": True, "final_layer_type": "wavenet", "target": "mel",
                "content_dim": 512, "content_codebook_size": 1024, "content_type": "discrete", "f0_condition": False,
                "n_f0_bins": 512, "content_codebooks": 1, "is_causal": False, "long_skip_connection": True,
                "zero_prompt_speech_token": False, "time_as_token": False, "style_as_token": False,
                "uvit_skip_connection": True, "add_resblock_in_transformer": False},
        "wavenet": {"hidden_dim": 512, "num_layers": 8, "kernel_size": 5, "dilation_rate": 1, "p_dropout": 0.2,
                    "style_condition": True},
    },
    "gpt_checkpoint": "gpt.pth", "w2v_stat": "wav2vec2bert_stats.pt", "s2mel_checkpoint": "s2mel.pth",
    "emo_matrix": "feat2.pt", "spk_matrix": "feat1.pt", "emo_num": [3, 17, 2, 8, 4, 5, 10, 24],
    "qwen_emo_path": "qwen0.6bemo4-merge/", "vocoder": {"type": "bigvgan", "name": "nvidia/bigvgan_v2_22khz_80band_256x"},
    "version": 2.0,
}  # fmt: skip
FULL_W2V: dict[str, Any] = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                                conv_depthwise_kernel_size=31, feature_projection_input_dim=160)  # fmt: skip
# nvidia/bigvgan_v2_22khz_80band_256x's config.json (the generator's keys)
FULL_BIGVGAN: dict[str, Any] = {
    "resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2], "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4],
    "upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "use_tanh_at_final": False, "use_bias_at_final": False,
    "activation": "snakebeta", "snake_logscale": True, "num_mels": 80, "num_freq": 1025, "n_fft": 1024, "hop_size": 256,
    "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": None, "fmax_for_loss": None,
}  # fmt: skip
CORPUS = ["THIS IS MY VOICE.", "HELLO THERE, HOW ARE YOU TODAY?", "THANKS FOR THE STREAM, SEE YOU TOMORROW!",
          "NICE PLAY, THAT WAS INSANE!", "SECOND LINE. IT HAS TWO SENTENCES!", "CAN YOU SAY HI TO MY FRIEND TOM?",
          "主 播 今 天 状 态 真 好 ！", "谢 谢 老 板 的 火 箭 ， 老 板 大 气 。", "你 好 ， 我 是 主 播 。",
          "大 家 晚 上 好 。 今 天 我 们 继 续 挑 战 最 高 难 度 ！", "REMEMBER TO FOLLOW IF YOU LIKE THE STREAM.",
          "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.", "WHAT GAME ARE YOU PLAYING NEXT?"]  # fmt: skip


def randomize(module, seed: int, std: float = 0.02) -> None:
    """Every parameter random (small normals, norm weights near 1): compute does not depend on the
    values, and a model that outputs zeros would make any two paths look equal."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(noise + 1 if ("norm" in name or name.endswith(".gamma")) and p.ndim == 1 else noise)


def random_model(root: Path, cfg: dict, w2v: dict, bigvgan: dict, seed: int = 0, log=lambda m: None,
                 half_gpt: bool = False) -> None:  # fmt: skip
    """Write an IndexTTS2 model folder of these sizes with random weights, in the release formats,
    with the four hub folders inside it (`w2v-bert-2.0/`, `MaskGCT/`, `campplus/`, `bigvgan/`)."""
    import torch
    import yaml
    from omegaconf import OmegaConf

    from ishowttsd.engines.indextts.files import quiet

    root.mkdir(parents=True, exist_ok=True)
    oc = OmegaConf.create(cfg)
    local = copy.deepcopy(cfg)
    local["vocoder"] = {"type": "bigvgan", "name": "bigvgan"}
    (root / "config.yaml").write_text(yaml.safe_dump(local, allow_unicode=True, sort_keys=False))
    with quiet():
        import sentencepiece as spm

        corpus = root / "corpus.txt"
        corpus.write_text("\n".join(CORPUS * 4) + "\n", encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / "bpe"), vocab_size=min(256, cfg["gpt"]["number_text_tokens"]),
                                       model_type="bpe", character_coverage=1.0, bos_id=0, eos_id=1, unk_id=2, pad_id=-1,
                                       hard_vocab_limit=False, minloglevel=2)  # fmt: skip
        (root / "bpe.vocab").unlink(missing_ok=True)
        corpus.unlink()

        from indextts.gpt.model_v2 import UnifiedVoice

        log("GPT")
        gpt = UnifiedVoice(**oc.gpt)
        randomize(gpt, seed, 0.05 if half_gpt else 0.02)
        sd = {k: v.half() if half_gpt and v.is_floating_point() else v for k, v in gpt.state_dict().items()}
        torch.save({"model": sd}, root / "gpt.pth")
        del gpt, sd

        from indextts.s2mel.modules.commons import MyModel

        log("s2mel")
        s2 = MyModel(oc.s2mel, use_gpt_latent=True)
        randomize(s2, seed + 1, 0.1 if half_gpt else 0.02)
        torch.save({"net": {k: m.state_dict() for k, m in s2.models.items()}}, root / "s2mel.pth")
        del s2

        from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

        log("w2v-bert")
        model = Wav2Vec2BertModel(Wav2Vec2BertConfig(**w2v))
        randomize(model, seed + 2, 0.03)
        model.save_pretrained(str(root / "w2v-bert-2.0"))
        del model
        SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, padding_value=1.0, sampling_rate=16000, stride=2,
                                    return_attention_mask=True).save_pretrained(str(root / "w2v-bert-2.0"))  # fmt: skip
        g = torch.Generator().manual_seed(seed + 3)
        torch.save({"mean": torch.randn(1024, generator=g) * 0.1, "var": torch.rand(1024, generator=g) + 0.5},
                   root / "wav2vec2bert_stats.pt")  # fmt: skip

        from safetensors.torch import save_model

        from indextts.utils.maskgct_utils import build_semantic_codec

        log("semantic codec, CAM++, BigVGAN")
        codec = build_semantic_codec(oc.semantic_codec)
        randomize(codec, seed + 4, 0.05)
        (root / "MaskGCT" / "semantic_codec").mkdir(parents=True, exist_ok=True)
        save_model(codec, str(root / "MaskGCT" / "semantic_codec" / "model.safetensors"))

        from indextts.s2mel.modules.campplus.DTDNN import CAMPPlus

        camp = CAMPPlus(feat_dim=80, embedding_size=192)
        randomize(camp, seed + 5, 0.05)
        (root / "campplus").mkdir(exist_ok=True)
        torch.save(camp.state_dict(), root / "campplus" / "campplus_cn_common.bin")

        n = sum(cfg["emo_num"])
        torch.save(torch.randn(n, 192, generator=g), root / "feat1.pt")
        torch.save(torch.randn(n, cfg["gpt"]["model_dim"], generator=g) * 0.05, root / "feat2.pt")

        from indextts.s2mel.modules.bigvgan.bigvgan import BigVGAN
        from indextts.s2mel.modules.bigvgan.env import AttrDict

        (root / "bigvgan").mkdir(exist_ok=True)
        (root / "bigvgan" / "config.json").write_text(json.dumps(bigvgan, indent=2))
        voc = BigVGAN(AttrDict(bigvgan))
        randomize(voc, seed + 6, 0.2 if half_gpt else 0.02)
        torch.save({"generator": voc.state_dict()}, root / "bigvgan" / "bigvgan_generator.pt")
        del voc
        random_qwen(root / str(cfg["qwen_emo_path"]).strip().rstrip("/"), seed + 7)


def random_qwen(folder: Path, seed: int) -> None:
    """A tiny Qwen3 causal LM with a word-level tokenizer and a chat template, in the emotion
    model's place (the benchmark does not time it; upstream loads it at start)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    words = ["<|im_start|>", "<|im_end|>", "<unk>", "{", "}", ":", ",", '"', "高兴", "愤怒", "悲伤", "恐惧", "反感",
             "低落", "惊讶", "自然", "0.1", "0.5", "1.0", "system", "user", "assistant", "文本情感分类"]  # fmt: skip
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.chat_template = (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|> {% endfor %}"
        "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
    )
    fast.save_pretrained(str(folder))
    cfg = Qwen3Config(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=16, eos_token_id=1, bos_token_id=0,
                      pad_token_id=1, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(cfg)
    randomize(model, seed, 0.5)
    model.save_pretrained(str(folder))


# -- upstream ------------------------------------------------------------------------------------

HUB_REPOS = {"w2v_bert": "facebook/w2v-bert-2.0", "maskgct": "amphion/MaskGCT", "campplus": "funasr/campplus"}


@contextlib.contextmanager
def hub_cache(folders: dict[str, Path], work: Path):
    """A Hugging Face hub cache made of links to the local folders, with the hub offline: upstream
    finds its models where it looks for them and nothing is downloaded."""
    import huggingface_hub.constants as c

    from ishowttsd.engines.indextts.files import hub_offline

    cache = work / "hub"
    for key, repo in HUB_REPOS.items():
        base = cache / f"models--{repo.replace('/', '--')}"
        snap = base / "snapshots" / ("0" * 40)
        if not snap.exists():
            snap.parent.mkdir(parents=True, exist_ok=True)
            snap.symlink_to(folders[key].resolve(), target_is_directory=True)
            (base / "refs").mkdir(parents=True, exist_ok=True)
            (base / "refs" / "main").write_text("0" * 40)
    hub_offline()
    saved = c.HF_HUB_CACHE
    c.HF_HUB_CACHE = str(cache)
    try:
        yield
    finally:
        c.HF_HUB_CACHE = saved


def build_upstream(model_dir: Path, folders: dict[str, Path], device: str, normalize: bool, work: Path):
    """An `indextts.IndexTTS2` built by its own loading methods (as its __init__ calls them) from the
    same files. The config copy names the local BigVGAN folder; without `normalize` its tokenizer
    gets no normaliser (ours then has none either)."""
    import yaml

    from ishowttsd.engines.indextts.files import quiet

    cfg = yaml.safe_load((model_dir / "config.yaml").read_text())
    cfg["vocoder"]["name"] = str(folders["bigvgan"].resolve())
    cfg_path = work / "upstream-config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    with quiet(), hub_cache(folders, work):
        from indextts.infer_v2 import IndexTTS2
        from indextts.utils.front import TextTokenizer

        up = IndexTTS2.__new__(IndexTTS2)
        up._resolve_device(device, False, False)
        up._load_config(str(model_dir), str(cfg_path))
        up.use_accel, up.use_torch_compile = False, False
        up._load_gpt(False)
        up._load_semantic()
        up._load_s2mel()
        up._load_vocoder()
        if normalize:
            up._load_text(None)
        else:
            up.normalizer = None
            up.tokenizer = TextTokenizer(os.path.join(str(model_dir), up.cfg.dataset["bpe_model"]), None)
        up._load_emotion_matrices()
        up._init_cache()
    return up


def upstream_infer(up, ref: Path, text: str, seed: int, max_mel_tokens: int, **emotion):
    """upstream.infer() seeded, at our sampling settings with one sequence; (sr, int16 array)."""
    import contextlib as cl
    import io

    import torch

    from ishowttsd.engines.indextts.files import quiet

    torch.manual_seed(seed)
    with quiet(), cl.redirect_stdout(io.StringIO()), cl.redirect_stderr(io.StringIO()):
        return up.infer(str(ref), text, "", num_beams=1, top_p=0.8, top_k=30, temperature=0.8, repetition_penalty=10.0,
                        max_mel_tokens=max_mel_tokens, **emotion)  # fmt: skip


# -- the run ---------------------------------------------------------------------------------------


def codes_for(text: str) -> int:
    """Codes a real model makes of a text: about 0.22 s per CJK character, 0.065 s per other letter."""
    cjk = sum(1 for ch in text if ord(ch) > 0x2E80 and ch.isalpha())
    other = sum(1 for ch in text if ch.isalpha() and ord(ch) <= 0x2E80)
    return max(25, int(CODES_PER_S * (0.22 * cjk + 0.065 * other)))


def _median(xs):
    return statistics.median(xs) if xs else None


def _r(x, n: int = 4):
    return None if x is None else round(x, n)


class _Ctx:
    def resolve(self, p: str) -> Path:
        return Path(p).expanduser()


def _reference(work: Path, given: str | None) -> Path:
    """The reference: given, or the first 3 s of f5-tts's example voice where it is installed,
    or a synthetic voiced signal."""
    import numpy as np
    import soundfile as sf

    if given:
        return Path(given)
    out = work / "reference.wav"
    try:
        from importlib.resources import files

        src = Path(str(files("f5_tts").joinpath("infer/examples/basic/basic_ref_en.wav")))
        wav, sr = sf.read(str(src), dtype="float32")
        sf.write(str(out), wav[: 3 * sr], sr)
        return out
    except Exception:
        sr = 22050
        t = np.arange(3 * sr) / sr
        phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 1.5 * t)) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
        sf.write(str(out), (0.05 * x).astype(np.float32), sr)
        return out


def run(args) -> dict[str, Any]:
    import torch

    from ishowttsd.engines.base import EngineContext, Voice
    from ishowttsd.hardware import cpu_flags
    from ishowttsd.engines.kernels import rel_error
    import ishowttsd.engines.indextts.files as files
    from ishowttsd.engines.indextts.engine import IndexTTSEngine, IndexTTSSettings

    log = (lambda m: print(f"[bench {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True))
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tmp = tempfile.TemporaryDirectory(prefix="ishowtts-bench-")
    work = Path(tmp.name)
    table: dict[str, Any] = {}
    if args.config:
        from ishowttsd.config import load_config

        cfg = load_config(args.config)
        table = dict(cfg.engine.engine_tables().get("indextts", {}))
        for key in ("model_dir", "config", "w2v_bert", "maskgct", "campplus", "bigvgan", "qwen_emotion", "normalizer_cache"):
            if table.get(key):
                table[key] = str(cfg.resolve(table[key]))
    weights = "checkpoint"
    size = "configured"
    if not table.get("model_dir"):
        weights, size = "random", "full"
        model_cfg = copy.deepcopy(FULL_CONFIG)
        if args.gpt_layers:
            model_cfg["gpt"]["layers"] = args.gpt_layers
            size = f"full, GPT {args.gpt_layers} of 24 layers"
        folder = Path(args.weights_dir) if args.weights_dir else work / "model"
        if not (folder / ".complete").exists() or json.loads((folder / ".complete").read_text()) != model_cfg:
            log(f"writing IndexTTS2 with random weights ({size}) to {folder}")
            random_model(folder, model_cfg, FULL_W2V, FULL_BIGVGAN, log=log)
            (folder / ".complete").write_text(json.dumps(model_cfg))
        table["model_dir"] = str(folder)
    table.update({"device": device, "seed": 0, "normalize": not args.no_normalize,
                  "normalizer_cache": table.get("normalizer_cache") or str(args.normalizer_cache or work / "nemo")})  # fmt: skip
    state = work / "state"
    ref = _reference(work, args.reference)

    def partial(what: dict) -> None:
        """What is measured so far, next to --out: a run cut short by the shared machine still tells."""
        if args.out:
            Path(args.out + ".partial").write_text(json.dumps(what, indent=1, ensure_ascii=False, default=str))

    voice = Voice(id="bench", engine="indextts", reference_audio=str(ref))
    load_before = os.getloadavg()

    def make(**kw) -> IndexTTSEngine:
        e = IndexTTSEngine(IndexTTSSettings(**{**table, **kw}), EngineContext(config=_Ctx(), state_dir=state))
        e.load(lambda *_: None)
        e.add_voice(voice)
        return e

    log(f"loading our engine ({device})")
    t0 = time.perf_counter()
    ours = make(fast=False, dtype="fp32")
    load_s = time.perf_counter() - t0
    texts = DANMAKU[: args.utterances]

    def ours_once(e: IndexTTSEngine, text: str, n: int) -> tuple[float, float, int]:
        e.settings.max_mel_tokens = n
        t = time.perf_counter()
        first, total = None, 0
        for chunk in e.synthesize(text, voice, threading.Event()):
            first = first if first is not None else time.perf_counter() - t
            total += len(chunk.samples)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t, first or 0.0, total

    up = None
    if args.compare_upstream:
        log("loading upstream indextts.IndexTTS2 (its own loaders, hub offline)")
        paths = files.resolve_paths(IndexTTSSettings(**table), Path)
        up = build_upstream(paths.model_dir, paths.folders, device, not args.no_normalize, work)

    def up_once(text: str, n: int) -> tuple[float, int]:
        t = time.perf_counter()
        sr, wav = upstream_infer(up, ref, text, 0, n)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t, len(wav)

    log("warm-up")
    ours.warmup(lambda *_: None)
    ours_once(ours, texts[0], 8)
    if up is not None:
        up_once(texts[0], 8)  # builds upstream's speaker cache and touches every kernel

    rows = []
    def codes(text: str) -> int:
        return min(codes_for(text), ours.models.gpt.max_mel_tokens)

    for i, text in enumerate(texts):
        n = codes(text)
        o_t, u_t = [], []
        for _ in range(args.runs):
            if up is not None:
                ut, un = up_once(text, n)
                u_t.append(ut)
            ot, ottfa, on = ours_once(ours, text, n)
            o_t.append(ot)
        row = {"text": text, "codes": n, "ours_s": _median(o_t), "ours_audio_s": on / 22050, "ours_ttfa_s": ottfa,
               "timings": {k: _r(v, 3) for k, v in ours.timings.items()}}  # fmt: skip
        if up is not None:
            row.update({"upstream_s": _median(u_t), "upstream_audio_s": un / 22050, "speedup": _median(u_t) / _median(o_t),
                        "same_length": abs(un - on) <= 1})  # fmt: skip
            row["upstream_rtf"] = row["upstream_s"] / row["upstream_audio_s"]
        row["ours_rtf"] = row["ours_s"] / row["ours_audio_s"]
        rows.append(row)
        log(f"{i + 1}/{len(texts)} ours {row['ours_s']:.2f} s" + (f", upstream {row['upstream_s']:.2f} s" if up else ""))
        partial({"utterances": rows})

    log("three-sentence text: time to first audio")
    # each segment gets the codes its own text would make (a real model stops at its end)
    segment = ours._segment

    def sized(pieces, *a, **k):
        ours.settings.max_mel_tokens = codes("".join(pieces).replace("▁", " "))
        return segment(pieces, *a, **k)

    ours._segment = sized
    try:
        tt, ttfa, tn = ours_once(ours, THREE_SENTENCES, codes(THREE_SENTENCES))
    finally:
        ours._segment = segment
    segments = ["".join(s).replace("▁", " ").strip() for s in ours.plan(THREE_SENTENCES)]
    partial({"utterances": rows, "ttfa": {"ttfa_s": ttfa, "total_s": tt, "segments": segments}})

    fast: dict[str, Any] = {}
    modes: dict[str, Any] = {}
    if not args.no_fast and not device.startswith("cuda"):
        log("fast mode (CPU: int8 and bf16)")
        from ishowttsd.hardware import cpu_has_amx

        if up is not None:  # memory: a full-size model is about 5 GB per copy
            del up
            gc.collect()
        auto = "bf16" if cpu_has_amx() else "int8"  # what fast_mode = "auto" picks on this CPU
        results: dict[str, dict] = {}
        for mode in sorted(args.fast_modes.split(","), key=lambda m: m != auto):  # one fast engine at a time
            fe = make(fast=True, fast_mode=mode)
            fe.warmup(lambda *_: None)
            r = results[fe.dtype_name] = {"ratios": [], "errs": [], "times_s": [], "fp32_s": [], "tokens_equal": [],
                                          "kernels": fe.kernel_kind}  # fmt: skip
            for text in texts[: args.fast_utterances]:
                n = codes(text)
                # untimed: oneDNN and fbgemm make their kernels per shape, and the fp32 engine has met
                # this utterance's shapes above; without this the fast side pays that once in its time
                ours_once(fe, text, n)
                fp32_s, _, _ = ours_once(ours, text, n)  # back to back, so that load changes hit both
                want_codes = ours.last_codes
                ft, _, _ = ours_once(fe, text, n)
                r["times_s"].append(ft)
                r["fp32_s"].append(fp32_s)
                r["ratios"].append(fp32_s / ft)
                r["tokens_equal"].append(fe.last_codes == want_codes)
                r["errs"].append(rel_error(teacher_forced_mel(fe, text, want_codes), teacher_forced_mel(ours, text, want_codes)))
            del fe
            gc.collect()
            partial({"utterances": rows, "fast": results})
        for name, r in results.items():
            modes[name] = {"speedup": _median(r["ratios"]), "rel_error": _median(r["errs"]), "rel_error_max": max(r["errs"]),
                           "times_s": r["times_s"], "fp32_s": r["fp32_s"], "tokens_equal": r["tokens_equal"]}  # fmt: skip
        first = next(iter(results))
        fast = {"mode": first, "kernels": results[first]["kernels"], **modes[first], "utterances": args.fast_utterances}

    from importlib.metadata import version

    from ishowttsd import __version__

    up_rows = [r for r in rows if "speedup" in r]
    summary = {
        "speedup_vs_upstream": _r(_median([r["speedup"] for r in up_rows])) if up_rows else None,
        "ttfa_fraction": _r(ttfa / tt),
        "fast_mode_speedup": _r(fast.get("speedup")),
        "fast_mode_rel_error": _r(fast.get("rel_error"), 6),
        "fast_mode": fast.get("mode"),
        "rtf_ours_median": _r(_median([r["ours_rtf"] for r in rows])),
        "rtf_upstream_median": _r(_median([r["upstream_rtf"] for r in up_rows])) if up_rows else None,
        "same_audio_length": all(r["same_length"] for r in up_rows) if up_rows else None,
        "device": device,
        "cpu": _cpu_name(),
        "cpu_flags": sorted(f for f in cpu_flags() if f.startswith(("avx512", "amx", "avx_vnni"))),
        "threads": torch.get_num_threads(),
        "dtype": "fp32",
        "kernels": ours.kernel_kind,
        "weights": weights,
        "model_size": size,
        "codes_rule": f"{CODES_PER_S} codes per estimated second of speech (random weights never stop by themselves)",
        "sampling": {"num_beams": 1, "top_k": 30, "top_p": 0.8, "temperature": 0.8, "repetition_penalty": 10.0, "seed": 0},
        "diffusion_steps": ours.settings.diffusion_steps,
        "normalize": not args.no_normalize,
        "reference_s": round(ours._prepared["bench"]["speaker"].seconds, 3),
        "runs": args.runs,
        "utterances": len(texts),
        "versions": {"torch": torch.__version__, "indextts2_inference": version("indextts2-inference"),
                     "transformers": version("transformers"), "ishowttsd": __version__, "python": platform.python_version()},
        "load_s": round(load_s, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }  # fmt: skip
    if device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name()
    tmp.cleanup()
    return {
        "summary": summary,
        "utterances": [{k: _r(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows],
        "ttfa": {"text": THREE_SENTENCES, "ttfa_s": _r(ttfa), "total_s": _r(tt), "audio_s": _r(tn / 22050), "segments": segments},
        "fast": {k: _r(v, 6) if isinstance(v, float) else v for k, v in fast.items()},
        "fast_modes": {m: {k: _r(v, 6) if isinstance(v, float) else v for k, v in d.items()} for m, d in modes.items()},
        "command": "python -m ishowttsd.bench " + " ".join(sys.argv[1:]),
    }


def teacher_forced_mel(e, text: str, codes: list[list[int]], voice_id: str = "bench"):
    """An engine's mel for given codes with fixed noise: a fast mode's numerical deviation without
    the sampling's divergence (one different token changes every token after it)."""
    import torch

    import ishowttsd.engines.indextts.s2mel as s2mel

    p = e._prepared[voice_id]
    sp = p["speaker"]
    mels = []
    with torch.inference_mode():
        for seg, c in zip(e.plan(text), codes):
            if not c:
                continue
            latent = e._gpt.teacher_forced(e._gpt.prefix(p["conds"], e.frontend.ids(seg)), c)
            mu = s2mel.condition(e.models, latent, c, sp.prompt_condition)
            g = torch.Generator(device=e.device).manual_seed(1234)
            mel = s2mel.solve(e._s2mel, mu, sp.ref_mel, sp.style, e.settings.diffusion_steps, e.settings.cfg_rate, g)
            mels.append(mel[0, :, sp.ref_mel.shape[-1] :])
    return torch.cat(mels, dim=-1)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def render(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = [
        f"IndexTTS2 benchmark: {s['model_size']} ({s['weights']} weights), {s['device']} {s['cpu']}, {s['threads']} threads, "
        f"{s['diffusion_steps']} diffusion steps, reference {s['reference_s']} s, torch {s['versions']['torch']}, "
        f"indextts2-inference {s['versions']['indextts2_inference']}",
        "",
        f"{'utterance':<40} {'codes':>5} {'audio s':>8} {'upstream s':>10} {'ours s':>8} {'speedup':>8} {'RTF ours':>9}",
    ]
    for r in result["utterances"]:
        up = r.get("upstream_s")
        lines.append(f"{r['text'][:38]:<40} {r['codes']:>5} {r['ours_audio_s']:>8.2f} {up if up is not None else '-':>10} "
                     f"{r['ours_s']:>8.2f} {r.get('speedup') or '-':>8} {r['ours_rtf']:>9.3f}")  # fmt: skip
    t = result["ttfa"]
    lines += [
        "",
        f"speedup_vs_upstream  {s['speedup_vs_upstream']}   (median of upstream/ours, fp32, same seed and sampling; same audio length: {s['same_audio_length']})",
        f"ttfa_fraction        {s['ttfa_fraction']}   (first audio {t['ttfa_s']} s of {t['total_s']} s, {len(t['segments'])} segments)",
        f"fast_mode_speedup    {s['fast_mode_speedup']}   ({s['fast_mode']}, relative mel error {s['fast_mode_rel_error']} on the fp32 codes)",
        *(f"  fast mode {m:<13} speedup {d['speedup']}, relative error {d['rel_error']}" for m, d in result.get("fast_modes", {}).items()),
        f"RTF median           ours {s['rtf_ours_median']}, upstream {s['rtf_upstream_median']}",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ishowttsd.bench --engine indextts", description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="indextts", choices=["indextts"])
    ap.add_argument("--config", help="TOML config whose [engine.indextts] names the model folders (else random full-size weights)")
    ap.add_argument("--compare-upstream", action="store_true", help="also run upstream indextts.IndexTTS2.infer()")
    ap.add_argument("--out", help="write the JSON result here")
    ap.add_argument("--runs", type=int, default=1, help="timed runs per utterance (median)")
    ap.add_argument("--utterances", type=int, default=len(DANMAKU), help=f"how many of the {len(DANMAKU)} danmaku")
    ap.add_argument("--fast-utterances", type=int, default=2)
    ap.add_argument("--no-fast", action="store_true", help="skip the fast-mode measurement")
    ap.add_argument("--fast-modes", default="int8,bf16", help="CPU fast modes to measure (the one auto picks first)")
    ap.add_argument("--no-normalize", action="store_true", help="no text normaliser on either side")
    ap.add_argument("--normalizer-cache", help="folder for the nemo grammar cache (reused between runs)")
    ap.add_argument("--gpt-layers", type=int, help="random weights: GPT depth (24 is full size)")
    ap.add_argument("--weights-dir", help="random weights: write them here, or reuse what an earlier run wrote")
    ap.add_argument("--reference", help="reference recording (default: 3 s of f5-tts's example voice)")
    ap.add_argument("--device", help="cpu, cuda (default: cuda if available)")
    ap.add_argument("--threads", type=int)
    return ap


def main(argv: list[str] | None = None) -> int:
    from ishowttsd.bench.cli import run_main

    return run_main(build_parser().parse_args(argv), run, render)
