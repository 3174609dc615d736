"""BigVGAN (upstream's class, weight norm folded at load) inside the engine's precision policy.

Upstream runs BigVGAN in fp32 even when the rest is fp16. Here it follows the engine: fp16
autocast on CUDA (with the fused anti-aliased activation kernel where it built), bf16 autocast
in the CPU fast mode where the CPU has bf16, fp32 otherwise.
"""

from __future__ import annotations

import numpy as np
import torch


def vocode(model, mel: torch.Tensor, device: torch.device, half: torch.dtype | None) -> np.ndarray:
    """mel: (1, 80, T) fp32 -> float32 waveform in [-1, 1] at 22050 Hz."""
    with torch.inference_mode():
        if half is not None:
            with torch.autocast(device.type, dtype=half):
                wav = model(mel.to(half if device.type == "cuda" else torch.float32))
        else:
            wav = model(mel.float())
    return torch.clamp(wav.float(), -1.0, 1.0).reshape(-1).cpu().numpy()
