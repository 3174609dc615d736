"""Loading IndexTTS2 from local folders, through the `indextts` package's own classes, with checks.

Upstream's `IndexTTS2.__init__` fetches four models from the Hugging Face hub at run time
(`facebook/w2v-bert-2.0`, `amphion/MaskGCT`, `funasr/campplus` and the BigVGAN named in
`config.yaml`), loads `s2mel.pth` ignoring missing and mis-shaped weights, and writes its text
normaliser's grammar cache into its own package folder. Here every model is a configured local
folder, loaded with the hub offline; every file is checked before use and a missing, truncated
or mismatched one is named in the error with what was expected there.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ishowttsd.engines.base import EngineError

# what each folder must hold, and where the release gets it
HUB_FILES: dict[str, tuple[list[str], str]] = {
    "w2v_bert": (["config.json", "model.safetensors", "preprocessor_config.json"], "facebook/w2v-bert-2.0"),
    "maskgct": (["semantic_codec/model.safetensors"], "amphion/MaskGCT"),
    "campplus": (["campplus_cn_common.bin"], "funasr/campplus"),
    "bigvgan": (["config.json", "bigvgan_generator.pt"], "nvidia/bigvgan_v2_22khz_80band_256x"),
}
MODEL_FILES = ("gpt_checkpoint", "s2mel_checkpoint", "w2v_stat", "emo_matrix", "spk_matrix")
SEMANTIC_LAYER = 17  # the w2v-bert hidden state upstream reads (`hidden_states[17]`)


@contextlib.contextmanager
def quiet():
    """Upstream's modules and their dependencies warn and draw progress bars at import and build
    time (weight_norm, torch.load, transformers' config checks and weight loading, nemo's grammar
    builds); none of it is for a streamer's log, which has one line per event."""
    import logging

    from transformers.utils import logging as tlog

    level, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    nemo = logging.getLogger("NeMo-text-processing")
    nemo_level = nemo.level
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    nemo.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()
        nemo.setLevel(nemo_level)


def hub_offline() -> None:
    """Nothing is fetched from the hub, also by code that would try: env for what is imported
    later, the constants for what is imported already."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import huggingface_hub.constants as c

    c.HF_HUB_OFFLINE = True


@dataclass
class ModelPaths:
    """Where each part of the model is, resolved from `[engine.indextts]`."""

    model_dir: Path
    config: Path
    folders: dict[str, Path] = field(default_factory=dict)  # w2v_bert, maskgct, campplus, bigvgan
    qwen: Path | None = None

    def fingerprint(self, cfg) -> str:
        """Identity of the weights a voice's conditioning depends on (names, sizes, mtimes)."""
        parts = []
        files = [self.model_dir / str(cfg[k]).strip() for k in MODEL_FILES]
        files += [self.folders[k] / f for k in ("w2v_bert", "maskgct", "campplus") for f in HUB_FILES[k][0]]
        for f in files:
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
        return "|".join(parts)


def resolve_paths(settings, resolve) -> ModelPaths:
    """The model folder and every hub folder; errors say which key to set."""
    if not settings.model_dir:
        raise EngineError(
            "indextts: no model folder configured; set [engine.indextts] model_dir to a local copy of "
            "IndexTeam/IndexTTS-2 (config.yaml, gpt.pth, s2mel.pth, bpe.model, ...)"
        )
    model_dir = resolve(settings.model_dir)
    if not model_dir.is_dir():
        raise EngineError(f"indextts: model_dir {model_dir} is not a folder; point [engine.indextts] model_dir at the IndexTTS-2 folder")
    config = resolve(settings.config) if settings.config else model_dir / "config.yaml"
    if not config.is_file():
        raise EngineError(f"indextts: {config} does not exist; expected IndexTTS-2's config.yaml (set [engine.indextts] config)")
    paths = ModelPaths(model_dir=model_dir, config=config)
    for key, default in (("w2v_bert", "w2v-bert-2.0"), ("maskgct", "MaskGCT"), ("campplus", "campplus"), ("bigvgan", "bigvgan")):
        value = getattr(settings, key)
        paths.folders[key] = resolve(value) if value else model_dir / default
    return paths


def read_config(paths: ModelPaths):
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(str(paths.config))
        for key in ("gpt", "s2mel", "semantic_codec", "dataset", "emo_num", *MODEL_FILES):
            if key not in cfg:
                raise KeyError(key)
    except KeyError as e:
        raise EngineError(f"indextts: {paths.config} has no {e.args[0]!r} key; expected IndexTTS-2's config.yaml (version 2)") from None
    except Exception as e:
        raise EngineError(f"indextts: cannot read {paths.config} ({type(e).__name__}: {str(e)[:200]}); expected IndexTTS-2's config.yaml") from None
    if str(cfg.get("version", "")) not in ("2", "2.0"):
        raise EngineError(f"indextts: {paths.config} is for IndexTTS version {cfg.get('version')!r}; this engine runs IndexTTS2 (version 2.0)")
    return cfg


def check_files(paths: ModelPaths, cfg) -> None:
    """Every file the model needs exists; a missing one is named with where it comes from."""
    for key in MODEL_FILES:
        f = paths.model_dir / str(cfg[key]).strip()
        if not f.is_file():
            raise EngineError(f"indextts: {f} does not exist ({key} in {paths.config.name}); copy it from IndexTeam/IndexTTS-2")
    bpe = paths.model_dir / str(cfg.dataset["bpe_model"]).strip()
    if not bpe.is_file():
        raise EngineError(f"indextts: {bpe} does not exist (dataset.bpe_model); copy it from IndexTeam/IndexTTS-2")
    for key, (files, repo) in HUB_FILES.items():
        folder = paths.folders[key]
        for f in files:
            if not (folder / f).is_file():
                raise EngineError(
                    f"indextts: {folder} has no {f}; set [engine.indextts] {key} to a local copy of {repo} "
                    f"(nothing is downloaded)"
                )


def _torch_load(path: Path, what: str) -> Any:
    import torch

    try:
        with quiet():
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise EngineError(
            f"indextts: cannot read {path} ({type(e).__name__}: {str(e)[:160]}); the file is truncated or not {what}: "
            f"copy it again"
        ) from None


def load_state(module, sd: dict, path: Path, what: str) -> None:
    """load_state_dict with an error that names what does not fit (upstream skips such weights)."""
    import torch

    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
        raise EngineError(f"indextts: {path} does not fit {what}: {'; '.join(parts)}; the file and config.yaml belong to different models")
    bad = [k for k, v in sd.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise EngineError(f"indextts: {path} has NaN/inf weights (e.g. {bad[0]}); the file is damaged")
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})


@dataclass
class Models:
    """The loaded parts, each an instance of the `indextts` (or transformers) class upstream uses."""

    cfg: Any
    gpt: Any  # indextts.gpt.model_v2.UnifiedVoice
    s2mel: Any  # indextts.s2mel.modules.commons.MyModel
    semantic_model: Any  # transformers.Wav2Vec2BertModel (its first 17 layers)
    semantic_mean: Any
    semantic_std: Any
    feature_extractor: Any  # transformers.SeamlessM4TFeatureExtractor
    semantic_codec: Any  # RepCodec
    campplus: Any  # CAMPPlus
    bigvgan: Any  # BigVGAN
    emo_matrix: list
    spk_matrix: list
    emo_num: list[int]
    bpe: Path


def load_models(paths: ModelPaths, cfg, device, progress, use_cuda_kernel: bool) -> Models:
    """Everything but the text front end and the emotion model, on `device` in fp32."""
    import torch

    hub_offline()
    check_files(paths, cfg)
    with quiet():
        from indextts.gpt.model_v2 import UnifiedVoice
        from indextts.s2mel.modules.campplus.DTDNN import CAMPPlus
        from indextts.s2mel.modules.commons import MyModel
        from indextts.utils.maskgct_utils import build_semantic_codec

    progress("loading the GPT", 0.15)
    gpt_path = paths.model_dir / str(cfg.gpt_checkpoint).strip()
    try:
        with quiet():
            gpt = UnifiedVoice(**cfg.gpt)
    except Exception as e:
        raise EngineError(f"indextts: the gpt section of {paths.config} does not build UnifiedVoice ({type(e).__name__}: {e})") from None
    raw = _torch_load(gpt_path, "an IndexTTS2 GPT checkpoint")
    sd = raw.get("model", raw) if isinstance(raw, dict) else None
    if not isinstance(sd, dict):
        raise EngineError(f"indextts: {gpt_path} holds a {type(raw).__name__}, not a state dict")
    load_state(gpt, sd, gpt_path, "the GPT of config.yaml")
    gpt.post_init_gpt2_config(use_deepspeed=False, kv_cache=True, half=False)
    gpt = gpt.to(device).eval()

    progress("loading s2mel", 0.3)
    s2_path = paths.model_dir / str(cfg.s2mel_checkpoint).strip()
    with quiet():
        s2mel = MyModel(cfg.s2mel, use_gpt_latent=True)
    raw = _torch_load(s2_path, "an IndexTTS2 s2mel checkpoint")
    net = raw.get("net") if isinstance(raw, dict) else None
    if not isinstance(net, dict):
        raise EngineError(f"indextts: {s2_path} has no 'net' weights; expected IndexTTS-2's s2mel.pth")
    for key, module in s2mel.models.items():
        if key not in net:
            raise EngineError(f"indextts: {s2_path} has no {key!r} weights; expected IndexTTS-2's s2mel.pth")
        load_state(module, {k.removeprefix("module."): v for k, v in net[key].items()}, s2_path, f"s2mel's {key}")
    s2mel = s2mel.to(device).eval()

    progress("loading w2v-bert", 0.45)
    w2v_dir = paths.folders["w2v_bert"]
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertModel

    try:
        with quiet():
            extractor = SeamlessM4TFeatureExtractor.from_pretrained(str(w2v_dir), local_files_only=True)
            semantic = Wav2Vec2BertModel.from_pretrained(str(w2v_dir), local_files_only=True, dtype=torch.float32)
    except Exception as e:
        raise EngineError(
            f"indextts: w2v-bert folder {w2v_dir} does not load ({type(e).__name__}: {str(e)[:200]}); "
            f"expected a local copy of facebook/w2v-bert-2.0"
        ) from None
    if semantic.config.hidden_size != 1024 or len(semantic.encoder.layers) < SEMANTIC_LAYER:
        raise EngineError(
            f"indextts: {w2v_dir} has {len(semantic.encoder.layers)} layers of width {semantic.config.hidden_size}; "
            f"IndexTTS2 reads layer {SEMANTIC_LAYER} of a 1024-wide w2v-bert (facebook/w2v-bert-2.0)"
        )
    # only the layers up to the one read: the rest (7 of w2v-bert-2.0's 24) would be computed for nothing
    semantic.encoder.layers = semantic.encoder.layers[:SEMANTIC_LAYER]
    semantic = semantic.to(device).eval()
    stats_path = paths.model_dir / str(cfg.w2v_stat).strip()
    stats = _torch_load(stats_path, "w2v-bert statistics")
    if not isinstance(stats, dict) or "mean" not in stats or "var" not in stats:
        raise EngineError(f"indextts: {stats_path} has no mean/var; expected IndexTTS-2's wav2vec2bert_stats.pt")
    mean, std = stats["mean"].float().to(device), torch.sqrt(stats["var"].float()).to(device)

    progress("loading the semantic codec", 0.55)
    codec_path = paths.folders["maskgct"] / "semantic_codec" / "model.safetensors"
    from safetensors.torch import load_file

    with quiet():
        codec = build_semantic_codec(cfg.semantic_codec)
    try:
        sd = load_file(str(codec_path), device="cpu")
    except Exception as e:
        raise EngineError(
            f"indextts: cannot read {codec_path} ({type(e).__name__}: {str(e)[:160]}); the file is truncated or not "
            f"amphion/MaskGCT's semantic codec: copy it again"
        ) from None
    load_state(codec, sd, codec_path, "the semantic_codec of config.yaml")
    codec = codec.to(device).eval()

    progress("loading CAM++", 0.6)
    camp_path = paths.folders["campplus"] / "campplus_cn_common.bin"
    camp = CAMPPlus(feat_dim=80, embedding_size=192)
    load_state(camp, _torch_load(camp_path, "funasr/campplus's campplus_cn_common.bin"), camp_path, "CAM++ (feat_dim 80, 192)")
    camp = camp.to(device).eval()

    progress("loading BigVGAN", 0.7)
    bigvgan = load_bigvgan(paths.folders["bigvgan"], device, use_cuda_kernel)

    mats = []
    for key in ("emo_matrix", "spk_matrix"):
        f = paths.model_dir / str(cfg[key]).strip()
        m = _torch_load(f, f"IndexTTS-2's {key} tensor")
        n = sum(int(x) for x in cfg.emo_num)
        if not torch.is_tensor(m) or m.ndim != 2 or m.shape[0] != n:
            raise EngineError(f"indextts: {f} ({key}) is not a ({n}, dim) tensor; expected IndexTTS-2's {f.name}")
        mats.append(list(torch.split(m.float().to(device), [int(x) for x in cfg.emo_num])))
    bpe = paths.model_dir / str(cfg.dataset["bpe_model"]).strip()
    return Models(cfg=cfg, gpt=gpt, s2mel=s2mel, semantic_model=semantic, semantic_mean=mean, semantic_std=std,
                  feature_extractor=extractor, semantic_codec=codec, campplus=camp, bigvgan=bigvgan,
                  emo_matrix=mats[0], spk_matrix=mats[1], emo_num=[int(x) for x in cfg.emo_num], bpe=bpe)  # fmt: skip


def load_bigvgan(folder: Path, device, use_cuda_kernel: bool):
    """BigVGAN through its own `from_pretrained` from a local folder, weight norm folded."""
    with quiet():
        from indextts.s2mel.modules.bigvgan import bigvgan

    kernel = bool(use_cuda_kernel and str(device).startswith("cuda"))
    if kernel:
        try:  # the fused anti-aliased activation builds with nvcc and ninja; without them, torch's
            with quiet():
                from indextts.s2mel.modules.bigvgan.alias_free_activation.cuda import activation1d  # noqa: F401
        except Exception:
            kernel = False
    try:
        with quiet():
            model = bigvgan.BigVGAN.from_pretrained(str(folder), use_cuda_kernel=kernel, local_files_only=True)
    except Exception as e:
        raise EngineError(
            f"indextts: BigVGAN folder {folder} does not load ({type(e).__name__}: {str(e)[:200]}); expected "
            f"config.json and bigvgan_generator.pt of nvidia/bigvgan_v2_22khz_80band_256x"
        ) from None
    model.remove_weight_norm()
    model.cuda_kernel = kernel
    return model.to(device).eval()


def load_qwen_emotion(folder: Path):
    """The emotion model through upstream's `QwenEmotion` (a local Qwen3 folder)."""
    hub_offline()
    if not (folder / "config.json").is_file():
        raise EngineError(
            f"indextts: emotion model folder {folder} has no config.json; emo_text needs IndexTTS-2's "
            f"qwen0.6bemo4-merge folder (set [engine.indextts] qwen_emotion)"
        )
    try:
        with quiet():
            from indextts.emotion import QwenEmotion

            return QwenEmotion(str(folder))
    except Exception as e:
        raise EngineError(f"indextts: emotion model {folder} does not load ({type(e).__name__}: {str(e)[:200]})") from None
