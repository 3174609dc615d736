"""F5-TTS weights: the released architectures, the vocab, the checkpoint and the Vocos vocoder.

Everything loads through f5-tts's and vocos's own classes, with checks that name what does not
fit and what to do. The random-weight builders serve the benchmark and the tests (no weights
can be downloaded there): they save in the release formats, so the real loaders read them.
torch, f5-tts and vocos are imported inside the functions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ishowttsd.engines.base import EngineError

# architectures of the released checkpoints (f5_tts/configs/*.yaml, `model.arch`)
ARCHS: dict[str, dict[str, Any]] = {
    "F5TTS_v1_Base": dict(dim=1024, depth=22, heads=16, ff_mult=2, text_dim=512, text_mask_padding=True, conv_layers=4),
    "F5TTS_v1_Small": dict(dim=768, depth=18, heads=12, ff_mult=2, text_dim=512, text_mask_padding=True, conv_layers=4),
    "F5TTS_Base": dict(dim=1024, depth=22, heads=16, ff_mult=2, text_dim=512, text_mask_padding=False, conv_layers=4),
}
SAMPLE_RATE, HOP, N_FFT, N_MELS = 24_000, 256, 1024, 100


def import_f5():
    """f5-tts's CFM and DiT. The import is slow (it pulls the trainer's dependencies) and its
    dependencies warn at import time (x-transformers uses torch.jit.script): silenced here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from f5_tts.model import CFM, DiT
        import f5_tts.model.utils  # noqa: F401  (pinyin conversion, jieba)
        import vocos  # noqa: F401
    return CFM, DiT


def build_model(arch: dict[str, Any], vocab: dict[str, int]):
    """f5-tts's CFM around a DiT of `arch` for `vocab`, with the vocos mel settings of the
    released checkpoints; its weights are whatever the classes initialise them to."""
    CFM, DiT = import_f5()
    try:
        dit = DiT(**arch, text_num_embeds=len(vocab), mel_dim=N_MELS)
    except TypeError as e:
        raise EngineError(f"f5: [engine.f5] arch is not valid for f5-tts's DiT: {e}") from None
    return CFM(
        transformer=dit,
        mel_spec_kwargs=dict(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_mel_channels=N_MELS,
                             target_sample_rate=SAMPLE_RATE, mel_spec_type="vocos"),
        odeint_kwargs=dict(method="euler"),
        vocab_char_map=vocab,
    )  # fmt: skip


def load_vocab(path: Path) -> dict[str, int]:
    """vocab.txt as f5-tts reads it: one token per line, the line number is its id."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EngineError(f"f5: vocab file {path} does not exist; point [engine.f5] vocab at the checkpoint's vocab.txt") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EngineError(f"f5: cannot read vocab file {path} ({e}); expected the UTF-8 vocab.txt of the checkpoint") from None
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) < 2:
        raise EngineError(f"f5: vocab file {path} has {len(lines)} tokens; expected the checkpoint's vocab.txt (2545 lines for F5TTS_v1_Base)")
    vocab: dict[str, int] = {}
    for i, tok in enumerate(lines):
        vocab.setdefault(tok, i)
    if len(vocab) != len(lines):
        raise EngineError(f"f5: vocab file {path} has duplicate tokens; expected one distinct token per line")
    return vocab


def default_vocab() -> dict[str, int]:
    """The vocab.txt that ships with f5-tts (that of F5TTS_v1_Base)."""
    return load_vocab(default_vocab_path())


def default_vocab_path() -> Path:
    from importlib.resources import files

    return Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt")))


def read_checkpoint(path: Path, use_ema: bool) -> tuple[dict, str]:
    """The model state dict from an f5-tts checkpoint, and which weights it holds ("ema"/"model").

    .safetensors: flat, EMA keys prefixed `ema_model.` (the release format) or plain keys;
    .pt: {"ema_model_state_dict": ..., "model_state_dict": ...} (trainer) or a bare state dict.
    """
    import torch

    if not path.exists():
        raise EngineError(f"f5: checkpoint {path} does not exist; set [engine.f5] checkpoint to the model file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        elif suffix in (".pt", ".pth", ".ckpt", ".bin"):
            raw = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise EngineError(f"f5: checkpoint {path}: unknown format {suffix!r}; expected .safetensors or .pt")
    except EngineError:
        raise
    except Exception as e:
        raise EngineError(
            f"f5: cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:200]}); the file is truncated or not an "
            f"f5-tts checkpoint: download it again"
        ) from None
    if not isinstance(raw, dict):
        raise EngineError(f"f5: checkpoint {path} holds a {type(raw).__name__}, not a state dict")
    if "ema_model_state_dict" in raw or "model_state_dict" in raw:
        pick = "ema_model_state_dict" if use_ema and "ema_model_state_dict" in raw else "model_state_dict"
        if pick not in raw:
            pick = "ema_model_state_dict"
        sd, kind = raw[pick], "ema" if pick.startswith("ema") else "model"
    else:
        sd, kind = raw, "ema" if any(k.startswith("ema_model.") for k in raw) else "model"
    sd = {k.removeprefix("ema_model."): v for k, v in sd.items() if k not in ("initted", "step")}
    for k in ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window"):
        sd.pop(k, None)
    return sd, kind


def load_checkpoint(model, path: Path, use_ema: bool, model_name: str, vocab_path: Path | None) -> str:
    """Load into f5-tts's CFM with checks that name what does not fit."""
    import torch

    sd, kind = read_checkpoint(path, use_ema)
    own = model.state_dict()
    emb = "transformer.text_embed.text_embed.weight"
    if emb in sd and emb in own and sd[emb].shape[0] != own[emb].shape[0]:
        raise EngineError(
            f"f5: vocab {vocab_path or '(f5-tts default)'} has {own[emb].shape[0] - 1} tokens but checkpoint {path} "
            f"was trained with {sd[emb].shape[0] - 1}; use the vocab.txt that came with the checkpoint"
        )
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
        raise EngineError(
            f"f5: checkpoint {path} does not fit the {model_name} architecture: {'; '.join(parts)}. "
            f"Set [engine.f5] model (one of {sorted(ARCHS)}) or arch to match the checkpoint"
        )
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise EngineError(f"f5: checkpoint {path} has NaN/inf weights (e.g. {bad[0]}); the file is damaged")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return kind


def randomize(model, seed: int = 0, std: float = 0.02) -> None:
    """Every parameter random (small normals, norms near 1): a fresh DiT outputs zero velocity."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_(noise + 1 if "norm" in name and name.endswith("weight") else noise)


def vocos_config(dim: int = 512, intermediate_dim: int = 1536, num_layers: int = 8) -> str:
    """A Vocos config.yaml (mel 24 kHz), as charactr/vocos-mel-24khz ships it."""
    return (
        "feature_extractor:\n  class_path: vocos.feature_extractors.MelSpectrogramFeatures\n  init_args:\n"
        f"    sample_rate: {SAMPLE_RATE}\n    n_fft: {N_FFT}\n    hop_length: {HOP}\n    n_mels: {N_MELS}\n    padding: center\n"
        "backbone:\n  class_path: vocos.models.VocosBackbone\n  init_args:\n"
        f"    input_channels: {N_MELS}\n    dim: {dim}\n    intermediate_dim: {intermediate_dim}\n    num_layers: {num_layers}\n"
        "head:\n  class_path: vocos.heads.ISTFTHead\n  init_args:\n"
        f"    dim: {dim}\n    n_fft: {N_FFT}\n    hop_length: {HOP}\n    padding: same\n"
    )


def load_vocos(folder: Path | None, random_ok: bool, device):
    """Vocos from a local folder (config.yaml + pytorch_model.bin), or random for benchmarks."""
    import tempfile

    import torch
    from vocos import Vocos

    if folder is None:
        if not random_ok:
            raise EngineError(
                "f5: no vocoder configured; set [engine.f5] vocoder to a local Vocos folder "
                "(config.yaml + pytorch_model.bin from charactr/vocos-mel-24khz)"
            )
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "config.yaml"
            cfg.write_text(vocos_config())
            voc = Vocos.from_hparams(str(cfg))
        return voc.eval().to(device)
    cfg, weights = folder / "config.yaml", folder / "pytorch_model.bin"
    for f, what in ((cfg, "config.yaml"), (weights, "pytorch_model.bin")):
        if not f.exists():
            raise EngineError(f"f5: vocoder folder {folder} has no {what}; expected a local copy of charactr/vocos-mel-24khz")
    try:
        voc = Vocos.from_hparams(str(cfg))
    except Exception as e:
        raise EngineError(f"f5: vocoder config {cfg} is not a Vocos config ({type(e).__name__}: {str(e)[:200]})") from None
    try:
        sd = torch.load(str(weights), map_location="cpu", weights_only=True)
        voc.load_state_dict(sd)
    except Exception as e:
        raise EngineError(
            f"f5: vocoder weights {weights} do not load ({type(e).__name__}: {str(e)[:200]}); "
            f"expected the pytorch_model.bin that matches {cfg.name}"
        ) from None
    return voc.eval().to(device)


def release_state_dict(model) -> dict[str, Any]:
    """The CFM's weights as the released .safetensors holds them: EMA keys (`ema_model.`
    prefix), no mel filterbank."""
    return {f"ema_model.{k}": v.contiguous() for k, v in model.state_dict().items() if not k.startswith("mel_spec.")}


def save_random_vocos(folder: Path, seed: int = 1, std: float = 0.02, **dims: int) -> Path:
    """A Vocos folder (config.yaml + pytorch_model.bin) with random weights, as `load_vocos` reads it."""
    import torch
    from vocos import Vocos

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(vocos_config(**dims))
    voc = Vocos.from_hparams(str(folder / "config.yaml"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in voc.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    torch.save(voc.state_dict(), folder / "pytorch_model.bin")
    return folder
