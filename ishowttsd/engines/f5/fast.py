"""Our F5-TTS hot path: one DiT forward per ODE step, computed with kernels chosen for the device.

The weights live in f5-tts's own `DiT` module (loaded through its classes); this module reads
them once and runs the same mathematics with less work per step:

- the text embedding and the constant part of the input projection (reference mel + text) are
  computed once per utterance, so a step only projects the noisy mel;
- classifier-free guidance is packed: conditional and unconditional halves run as one batch;
- the time conditioning (time embedding and every block's six modulation vectors) depends
  only on the ODE time, the same for every utterance: computed once per time point and kept;
- the modulation is LayerNorm's own affine (one pass instead of two);
- rotary embedding in fp32 is one complex multiply on interleaved pairs, applied in the
  (batch, token, head) layout the QKV projection writes, so q and k are never transposed;
- on CPU every Linear is a oneDNN matmul (fused GELU in the feed-forward): on the AMD EPYC
  measured, 180-210 GFLOP/s (the cores' fp32 peak) against about 150 for PyTorch's default GEMM;
- several utterances run as one batch with a key-padding mask, so each equals its own solo run.

Imported when the engine loads (or when one of its names is first read from
`ishowttsd.engines.f5`), never at daemon start: importing torch is seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ishowttsd.engines.kernels import Linear, onednn_available, rel_error  # noqa: F401  (re-exported)

# EPSS time grids (Empirically Pruned Step Sampling), as f5-tts 1.1.22 defines them, in 1/32 units
_EPSS = {
    5: [0, 2, 4, 8, 16, 32],
    6: [0, 2, 4, 6, 8, 16, 32],
    7: [0, 2, 4, 6, 8, 16, 24, 32],
    10: [0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32],
    12: [0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32],
    16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32],
}


def time_grid(steps: int, sway: float | None, use_epss: bool = True) -> torch.Tensor:
    """The ODE time points (steps + 1 of them), in fp32 on CPU."""
    if use_epss and steps in _EPSS:
        t = torch.tensor(_EPSS[steps], dtype=torch.float32) / 32
    else:
        t = torch.linspace(0, 1, steps + 1, dtype=torch.float32)
    if sway is not None:
        t = t + sway * (torch.cos(torch.pi / 2 * t) - 1 + t)
    return t


@dataclass
class _Block:
    ada: Linear  # time embedding -> 6 modulations
    qkv: Linear  # fused q, k, v projection
    out: Linear
    ff1: Linear  # with fused tanh-GELU
    ff2: Linear
    heads: int


class FastDiT:
    """Runs a loaded f5-tts `DiT` with our kernels. Call `prepare()` once per (batch of)
    utterance(s), then `velocity()` once per ODE step."""

    def __init__(self, dit, kind: str, dtype: torch.dtype) -> None:
        if dit.long_skip_connection is not None:
            raise ValueError("DiT with long_skip_connection is not supported by the fast path")
        self.dit = dit
        self.kind, self.dtype = kind, dtype
        lin = lambda m, act=None: Linear(m.weight, m.bias, kind, dtype, act)  # noqa: E731
        self.blocks = []
        for blk in dit.transformer_blocks:
            a = blk.attn
            if a.q_norm is not None or a.processor.pe_attn_head is not None:
                raise ValueError("DiT with qk_norm or pe_attn_head is not supported by the fast path")
            w = torch.cat([a.to_q.weight, a.to_k.weight, a.to_v.weight])
            b = torch.cat([a.to_q.bias, a.to_k.bias, a.to_v.bias])
            self.blocks.append(_Block(
                ada=Linear(blk.attn_norm.linear.weight, blk.attn_norm.linear.bias, "torch", dtype),
                qkv=Linear(w, b, kind, dtype), out=lin(a.to_out[0]),
                ff1=lin(blk.ff.ff[0][0], "gelu"), ff2=lin(blk.ff.ff[2]), heads=a.heads,
            ))  # fmt: skip
        proj = dit.input_embed.proj
        mel = dit.proj_out.out_features
        # the input projection split by what it sees: noisy mel (per step) vs cond mel + text (per utterance)
        self.proj_x = Linear(proj.weight[:, :mel], None, "torch", dtype)
        self.proj_ct_w = proj.weight[:, mel:].detach().to(dtype)
        self.proj_b = proj.bias.detach().to(dtype)
        self.conv_pos = dit.input_embed.conv_pos_embed
        self.norm_out = Linear(dit.norm_out.linear.weight, dit.norm_out.linear.bias, "torch", dtype)
        self.proj_out = Linear(dit.proj_out.weight, dit.proj_out.bias, "torch", dtype)
        self.mel_dim = mel
        self.pdtype = next(dit.parameters()).dtype
        self.dim = dit.dim
        self._tcache: dict[float, tuple] = {}
        # set when `step` is compiled: the batch dimension is marked dynamic (one graph per length
        # bucket for every batch size; 2b >= 2 rows, so dynamo's 0/1 specialisation never pins
        # it), and RoPE takes its real-valued form (inductor generates no code for complex ops)
        self.compiled = False

    # -- per utterance ------------------------------------------------------------------------

    def prepare(self, cond: torch.Tensor, text: torch.Tensor, lens: torch.Tensor | None) -> None:
        """cond: (b, n, mel) reference mel, zero beyond the reference; text: (b, nt) ids, -1 padded;
        lens: (b,) valid frames per item, or None when every item fills n."""
        dit = self.dit
        b, n, _ = cond.shape
        dev = cond.device
        # the text embedding runs per item at its own length: its ConvNeXt GRN normalises over
        # the whole sequence, so batch padding would leak into it (upstream's batch path differs
        # from its solo path there); per item, a batched utterance equals its solo run
        if lens is None:
            t_cond = dit.text_embed(text, seq_len=n, drop_text=False)
            t_null = dit.text_embed(text, seq_len=n, drop_text=True)
        else:
            t_cond, t_null = [], []
            for i, d in enumerate(lens.tolist()):
                for out, drop in ((t_cond, False), (t_null, True)):
                    out.append(F.pad(dit.text_embed(text[i : i + 1], seq_len=d, drop_text=drop), (0, 0, 0, n - d)))
            t_cond, t_null = torch.cat(t_cond), torch.cat(t_null)
        ct_cond = torch.cat([cond.to(t_cond.dtype), t_cond], dim=-1).to(self.dtype)
        ct_null = torch.cat([torch.zeros_like(cond, dtype=t_null.dtype), t_null], dim=-1).to(self.dtype)
        static = F.linear(torch.cat([ct_cond, ct_null]), self.proj_ct_w, self.proj_b)  # (2b, n, dim)
        self.static = static
        if lens is None:
            self.mask = None
            self.attn_mask = None
        else:
            m = torch.arange(n, device=dev)[None] < lens.to(dev)[:, None]
            self.mask = torch.cat([m, m])  # (2b, n)
            self.attn_mask = self.mask[:, None, None, :]  # keys only; padded queries are discarded
        if self.compiled:
            for t in (self.static, self.mask, self.attn_mask):
                if t is not None:
                    torch._dynamo.mark_dynamic(t, 0)
        freqs, _ = dit.rotary_embed.forward_from_seq_len(n)  # (1, n, dh), interleaved pairs
        if self.dtype == torch.float32 and not self.compiled:
            # pairs (a, b) are complex numbers a + ib; rotation by angle f is one complex multiply.
            # (1, n, 1, 1, dh/2) broadcasts over (2b, n, q|k, heads, dh/2)
            f = freqs[0, :, ::2].float()
            self.rot = torch.polar(torch.ones_like(f), f)[None, :, None, None, :]
            self.cos = self.sin = None
        else:  # half precision has no complex type, inductor no complex codegen: pairs (a, b) -> (-b, a)
            sign = torch.tensor([-1.0, 1.0], device=dev).repeat(freqs.shape[-1] // 2)
            self.rot = None
            self.cos = freqs.cos()[0][None, :, None, None].to(self.dtype)  # (1, n, 1, 1, dh)
            self.sin = (freqs.sin() * sign)[0][None, :, None, None].to(self.dtype)

    def clear(self) -> None:
        self.static = self.mask = self.attn_mask = self.cos = self.sin = self.rot = None

    # -- per step -----------------------------------------------------------------------------

    def _rope(self, qk: torch.Tensor) -> torch.Tensor:
        """qk: (2b, n, 2, heads, dh), q and k as the projection wrote them; returns them rotated."""
        if self.rot is not None:
            z = torch.view_as_complex(qk.unflatten(-1, (-1, 2)))
            return torch.view_as_real(z * self.rot).flatten(-2)
        swapped = qk.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return torch.addcmul(qk * self.cos, swapped, self.sin)

    def _time_conditioning(self, t: float) -> tuple[list[tuple[torch.Tensor, ...]], tuple[torch.Tensor, torch.Tensor]]:
        """Every block's modulations and the output norm's for ODE time `t`, computed once:
        they depend on t alone. ((shift, 1 + scale, gate) for attention and for the
        feed-forward, per block), (1 + scale, shift) of the output norm."""
        key = float(t)
        hit = self._tcache.get(key)
        if hit is not None:
            return hit
        dit = self.dit
        tt = torch.tensor([key], device=self.static.device, dtype=self.pdtype)
        st = F.silu(dit.time_embed(tt).to(self.dtype))  # (1, dim)
        mods = []
        for blk in self.blocks:
            sh_a, sc_a, g_a, sh_f, sc_f, g_f = blk.ada(st)[0].chunk(6)
            mods.append((sh_a, 1 + sc_a, g_a, sh_f, 1 + sc_f, g_f))
        scale, shift = self.norm_out(st)[0].chunk(2)
        if len(self._tcache) >= 64:  # fixed grids use a handful; bound it for any schedule
            self._tcache.clear()
        self._tcache[key] = hit = (mods, (1 + scale, shift))
        return hit

    def velocity(self, x: torch.Tensor, t: float, cfg_strength: float) -> torch.Tensor:
        """x: (b, n, mel) in fp32; t: the ODE time. Returns the guided velocity in fp32."""
        mods, out_mod = self._time_conditioning(t)
        x2 = x.to(self.dtype).repeat(2, 1, 1)  # the cond and uncond halves see the same noisy mel
        if self.compiled:
            torch._dynamo.mark_dynamic(x2, 0)
        pred, null = self.step(x2, mods, out_mod).float().chunk(2)
        return pred + (pred - null) * cfg_strength

    def step(self, x2: torch.Tensor, mods, out_mod) -> torch.Tensor:
        """One DiT forward, cond and uncond packed: x2 is (2b, n, mel), so is the result. What
        `torch.compile` compiles: the time conditioning comes in as tensors, so a new time
        point is not a recompile, and when compiled neither is a new batch size (the
        guidance, which would tie the two halves' sizes, is done outside)."""
        b2, n, _ = x2.shape
        scale_out, shift_out = out_mod
        h = self.static + self.proj_x(x2)
        h = self.conv_pos(h, mask=self.mask) + h
        dim = (self.dim,)
        for blk, (sh_a, sc_a, g_a, sh_f, sc_f, g_f) in zip(self.blocks, mods):
            y = F.layer_norm(h, dim, sc_a, sh_a, eps=1e-6)
            qkv = blk.qkv(y).view(b2, n, 3, blk.heads, -1)
            qk = self._rope(qkv[:, :, :2])  # (2b, n, 2, h, dh)
            # (2b, h, n, dh) views of the (token, head) layout: no copies for the attention
            a = F.scaled_dot_product_attention(
                qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2),
                attn_mask=self.attn_mask,
            )  # fmt: skip
            a = blk.out(a.transpose(1, 2).reshape(b2, n, -1))
            h = torch.addcmul(h, g_a, a)
            y = F.layer_norm(h, dim, sc_f, sh_f, eps=1e-6)
            h = torch.addcmul(h, g_f, blk.ff2(blk.ff1(y)))
        h = F.layer_norm(h, dim, scale_out, shift_out, eps=1e-6)
        return self.proj_out(h)


def sample(
    fast: FastDiT,
    cond: torch.Tensor,
    text: torch.Tensor,
    durations: list[int],
    ref_lens: list[int],
    *,
    steps: int,
    cfg_strength: float,
    sway: float | None,
    seed: int | None,
    pad_to: int | None = None,
    cancel=None,
    on_step=None,
) -> torch.Tensor | None:
    """Euler integration of the flow from noise to mel, as f5-tts's `CFM.sample` does it.

    cond: (b, n_ref_max, mel) reference mels (zero padded); durations: total frames per item
    (reference + generated). Returns (b, n, mel) fp32, the reference frames replaced by the
    reference, or None when `cancel` was set.
    """
    dev = cond.device
    b = cond.shape[0]
    n = max(durations)
    if pad_to is not None:
        n = max(n, pad_to)
    cond = F.pad(cond.float(), (0, 0, 0, n - cond.shape[1]))
    frames = torch.arange(n, device=dev)[None]
    cond_mask = (frames < torch.tensor(ref_lens, device=dev)[:, None])[..., None]
    cond = torch.where(cond_mask, cond, torch.zeros_like(cond))
    # padded to a compile bucket: always masked, even when an item fills the bucket exactly, so
    # the compiled step sees the same inputs (a mask, not None) as at warm-up and never recompiles
    padded = pad_to is not None or len(set(durations)) > 1
    lens = torch.tensor(durations, device=dev) if padded else None
    # one noise draw per item with the same seed, as upstream does: a batch equals solo runs
    y = torch.zeros(b, n, cond.shape[-1], device=dev)
    for i, d in enumerate(durations):
        g = torch.Generator(device=dev)
        g.manual_seed(seed if seed is not None else torch.seed())
        y[i, :d] = torch.randn(d, cond.shape[-1], generator=g, device=dev)
    ts = time_grid(steps, sway).tolist()
    fast.prepare(cond, text, lens)
    try:
        for i in range(len(ts) - 1):
            if cancel is not None and cancel.is_set():
                return None
            v = fast.velocity(y, ts[i], cfg_strength)
            y = y + (ts[i + 1] - ts[i]) * v
            if on_step is not None:
                on_step(i + 1, len(ts) - 1)
    finally:
        fast.clear()
    return torch.where(cond_mask, cond, y)


def bucket(n: int, buckets: list[int]) -> int:
    """The smallest bucket length >= n (a multiple of 128 beyond the largest)."""
    for v in sorted(buckets):
        if v >= n:
            return v
    return int(math.ceil(n / 128) * 128)
