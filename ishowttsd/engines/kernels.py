"""Kernels the neural engines share: a Linear layer with the kernel picked for the device and the
precision policy, and the error measure their fast modes are judged by.

Imported when an engine loads (it imports torch), never at daemon start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ishowttsd.hardware import cpu_has_vnni


def onednn_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except Exception:  # pragma: no cover - exotic builds
        return False


# int8 activations use the full 8 bits where the CPU multiplies u8 x s8 with VNNI (exact int32
# sums); without VNNI fbgemm's vpmaddubsw sums pairs into int16, which full-range activations
# can saturate, so they keep 7 bits there. Measured on a step of the full-size model: relative
# error 0.088 with 7 bits, 0.047 with 8, the same speed.
_REDUCE_RANGE = not cpu_has_vnni()


class Linear:
    """A Linear layer with the kernel picked for the device and precision policy.

    kind: "torch" (F.linear: cuBLAS on GPU), "onednn" (CPU fp32/bf16 oneDNN matmul),
    "int8" (CPU dynamic int8 with per-channel weights, fbgemm/x86).
    """

    def __init__(self, weight, bias, kind: str, dtype: torch.dtype, act: str | None = None) -> None:
        self.kind, self.act = kind, act
        w = weight.detach().to(dtype)
        b = None if bias is None else bias.detach().to(dtype)
        if kind == "int8":
            w32 = weight.detach().float()
            scale = (w32.abs().amax(dim=1) / 127.0).clamp(min=1e-8).double()
            zp = torch.zeros(w32.shape[0], dtype=torch.long)
            qw = torch.quantize_per_channel(w32, scale, zp, 0, torch.qint8)
            self.packed = torch.ops.quantized.linear_prepack(qw, None if bias is None else bias.detach().float())
        self.w, self.b = w.contiguous(), b

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "onednn":
            shape = x.shape
            attr, algo = ("gelu", "tanh") if self.act == "gelu" else ("none", "")
            y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.w, self.b, attr, [], algo)
            return y.view(*shape[:-1], y.shape[-1])
        if self.kind == "int8":
            shape = x.shape
            y = torch.ops.quantized.linear_dynamic(x.reshape(-1, shape[-1]).float(), self.packed, _REDUCE_RANGE)
            y = y.view(*shape[:-1], y.shape[-1]).to(x.dtype)
        else:
            y = F.linear(x, self.w, self.b)
        return F.gelu(y, approximate="tanh") if self.act == "gelu" else y


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in fp64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-12))
