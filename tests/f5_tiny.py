"""Tiny random-weight F5-TTS models saved in the real checkpoint formats, for tests.

Every parameter is random (a fresh DiT outputs zero velocity, which would make any two
paths look equal). Files: `model.safetensors` (EMA, `ema_model.` prefix, the release
format), `model.pt` (trainer format, EMA and plain), `vocab.txt`, `vocos/` (config.yaml +
pytorch_model.bin) and a reference WAV at 16 kHz with silence around it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_ARCH = dict(dim=64, depth=2, heads=2, dim_head=32, ff_mult=2, text_dim=32, text_mask_padding=True, conv_layers=1)
REF_TEXT = "This is my voice."


def tiny_vocab() -> list[str]:
    toks = [" "] + [chr(c) for c in range(33, 127)]
    toks += ["ni3", "hao3", "zhu3", "bo1", "，", "。", "！"]
    return toks


def build(dirpath: Path, seed: int = 0) -> dict[str, Path]:
    """Write a tiny model in every format into `dirpath`; returns the paths."""
    import torch
    from safetensors.torch import save_file

    from ishowttsd.engines.f5 import build_model, randomize, release_state_dict, save_random_vocos

    dirpath.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (dirpath / "vocab.txt").write_text("".join(t + "\n" for t in vocab), encoding="utf-8")
    model = build_model(TINY_ARCH, {t: i for i, t in enumerate(vocab)})
    randomize(model, seed=seed, std=0.05)
    ema = release_state_dict(model)
    save_file(ema, str(dirpath / "model.safetensors"))
    sd = {k.removeprefix("ema_model."): v for k, v in ema.items()}
    save_file(sd, str(dirpath / "model_plain.safetensors"))
    plain = {k: v * 0 for k, v in sd.items()}  # a different, non-EMA set: use_ema must pick EMA
    torch.save({"ema_model_state_dict": {**ema, "initted": torch.tensor(True), "step": torch.tensor(1)},
                "model_state_dict": plain, "step": 1}, dirpath / "model.pt")  # fmt: skip
    voc_dir = save_random_vocos(dirpath / "vocos", seed=seed + 1, std=0.1, dim=32, intermediate_dim=64, num_layers=1)
    ref = dirpath / "ref.wav"
    write_reference(ref)
    return {"dir": dirpath, "safetensors": dirpath / "model.safetensors", "plain": dirpath / "model_plain.safetensors",
            "pt": dirpath / "model.pt", "vocab": dirpath / "vocab.txt", "vocos": voc_dir, "ref": ref}  # fmt: skip


def write_reference(path: Path, seconds: float = 1.2, sr: int = 16_000, seed: int = 0, pad: float = 0.3) -> None:
    """A speech-like signal (modulated harmonics) with `pad` seconds of silence each side."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 140 + 20 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    x = 0.05 * x + 0.002 * rng.standard_normal(len(t))
    silence = np.zeros(int(pad * sr))
    sf.write(str(path), np.concatenate([silence, x, silence]).astype(np.float32), sr)


def engine_table(paths: dict[str, Path], **extra) -> str:
    """An `[engine.f5]` TOML table for the tiny model."""
    lines = [
        "[engine.f5]",
        'model = "tiny"',
        "arch = { " + ", ".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in TINY_ARCH.items()) + " }",
        f'checkpoint = "{paths["safetensors"]}"',
        f'vocab = "{paths["vocab"]}"',
        f'vocoder = "{paths["vocos"]}"',
    ]
    for k, v in extra.items():
        lines.append(f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}")
    return "\n".join(lines) + "\n"
