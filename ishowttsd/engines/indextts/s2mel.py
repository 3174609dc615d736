"""Our s2mel stage: the flow-matching DiT of upstream's `MyModel`, with per-step work removed.

Upstream's `CFM.solve_euler` runs 25 Euler steps of `DiT.forward` with classifier-free guidance
packed as a batch of two, and per step recomputes what does not change: the content projection
of the semantic condition, the input projection of the prompt mel, content and style, a T x T
boolean attention mask (all true for one utterance, and it keeps SDPA off its fast kernels),
the time embeddings and every adaptive norm's projection, and the weight-norm reparametrisation
of six layers. Ours, with the same mathematics (a test checks one velocity against upstream's
estimator to 1e-4):

- per utterance: everything the condition, prompt and style contribute to the input projection,
  for the conditional and the null half;
- per ODE time, once for the engine's life (25 fixed points): both time embeddings, every
  adaptive norm's scale and shift (folded with the RMSNorm weight), the WaveNet's time
  condition and the final layer's modulation;
- per step: the noisy mel is projected once for both halves; attention without a mask; the
  SwiGLU's two input projections as one matmul; weights folded once.

The noise is drawn from the caller's generator in upstream's shape and order, so a seeded run
equals upstream's seeded the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ishowttsd.engines.kernels import Linear


def _w(m) -> torch.Tensor:
    """A layer's weight with weight norm folded in (torch's old-style hooks keep g and v)."""
    if hasattr(m, "weight_g") and hasattr(m, "weight_v"):
        return torch._weight_norm(m.weight_v, m.weight_g, 0).detach()
    return m.weight.detach()


def _lin(m, kind, dtype, act=None) -> Linear:
    return Linear(_w(m), m.bias, kind, dtype, act)


class FastS2Mel:
    """Velocity of upstream's `DiT` (final layer "wavenet", no time or style token)."""

    def __init__(self, dit, kind: str, dtype: torch.dtype) -> None:
        if dit.time_as_token or dit.style_as_token or dit.final_layer_type != "wavenet" or not dit.long_skip_connection:
            raise ValueError("this s2mel DiT variant is not supported by the fast path")
        if not dit.transformer_style_condition:
            raise ValueError("s2mel DiT without style condition is not supported by the fast path")
        self.dit, self.kind, self.dtype = dit, kind, dtype
        tr = dit.transformer
        self.n_mel = dit.in_channels
        self.dim = tr.config.dim
        self.heads, self.dh = tr.config.n_head, tr.config.head_dim
        self.eps = tr.config.norm_eps
        self.emit = set(range(tr.config.n_layer // 2)) if tr.config.uvit_skip_connection else set()
        self.receive = {i for i in range(tr.config.n_layer) if i > tr.config.n_layer // 2} if self.emit else set()
        self.blocks = []
        for blk in tr.layers:
            w13 = torch.cat([blk.feed_forward.w1.weight, blk.feed_forward.w3.weight])
            self.blocks.append({
                "skip": _lin(blk.skip_in_linear, kind, dtype) if blk.uvit_skip_connection else None,
                "qkv": Linear(blk.attention.wqkv.weight, None, kind, dtype),
                "wo": Linear(blk.attention.wo.weight, None, kind, dtype),
                "w13": Linear(w13, None, kind, dtype),
                "w2": Linear(blk.feed_forward.w2.weight, None, kind, dtype),
                "hidden": blk.feed_forward.w1.out_features,
            })  # fmt: skip
        merge = _w(dit.cond_x_merge_linear)
        self.merge_x = Linear(merge[:, : self.n_mel], None, kind, dtype)
        self.merge_rest = (merge[:, self.n_mel :], dit.cond_x_merge_linear.bias.detach())
        skip = _w(dit.skip_linear)
        self.skip_res = Linear(skip[:, : self.dim], dit.skip_linear.bias, kind, dtype)
        self.skip_x = Linear(skip[:, self.dim :], None, kind, dtype)
        self.conv1 = _lin(dit.conv1, kind, dtype)
        self.res_projection = _lin(dit.res_projection, kind, dtype)
        wn = dit.wavenet
        self.wn_hidden, self.wn_layers = wn.hidden_channels, wn.n_layers
        self.wn_in = []
        for layer in wn.in_layers:
            conv = layer.conv.conv
            d, k = conv.dilation[0], conv.kernel_size[0]
            total = (k - 1) * d + 1 - 1
            self.wn_in.append((_w(conv).to(dtype), conv.bias.detach().to(dtype), d, total - total // 2, total // 2))
        self.wn_res = [(_w(l.conv.conv).to(dtype), l.conv.conv.bias.detach().to(dtype)) for l in wn.res_skip_layers]
        self.final_linear = _lin(dit.final_layer.linear, kind, dtype)
        self.conv2 = (_w(dit.conv2).to(dtype), dit.conv2.bias.detach().to(dtype))
        self._tcache: dict[float, dict] = {}
        freqs = 1.0 / (tr.config.rope_base ** (torch.arange(0, self.dh, 2)[: self.dh // 2].float() / self.dh))
        self._inv_freq = freqs

    # -- per utterance ---------------------------------------------------------------------------

    def prepare(self, mu: torch.Tensor, prompt: torch.Tensor, style: torch.Tensor) -> None:
        """mu: (1, T, content) condition; prompt: (1, 80, P) reference mel; style: (1, 192)."""
        dit = self.dit
        T = mu.shape[1]
        P = prompt.shape[-1]
        prompt_x = torch.zeros(1, T, self.n_mel, device=mu.device)
        prompt_x[:, :P] = prompt.transpose(1, 2)
        cond = dit.cond_projection(mu)
        null_cond = dit.cond_projection(torch.zeros_like(mu))
        w, b = self.merge_rest
        rest = torch.cat([torch.cat([prompt_x, cond, style[:, None].expand(1, T, -1)], dim=-1),
                          torch.cat([torch.zeros_like(prompt_x), null_cond, torch.zeros(1, T, style.shape[-1], device=mu.device)], dim=-1)])  # fmt: skip
        self.static = F.linear(rest, w, b).to(self.dtype)  # (2, T, dim)
        pos = torch.arange(T, device=mu.device).float()
        ang = torch.outer(pos, self._inv_freq.to(mu.device))
        self.rot = torch.polar(torch.ones_like(ang), ang)[None, :, None, None, :] if self.dtype == torch.float32 else None
        if self.rot is None:
            sign = torch.tensor([-1.0, 1.0], device=mu.device).repeat(self.dh // 2)
            cos, sin = ang.cos().repeat_interleave(2, -1), ang.sin().repeat_interleave(2, -1)
            self.cos = cos[None, :, None, None].to(self.dtype)
            self.sin = (sin * sign)[None, :, None, None].to(self.dtype)

    def clear(self) -> None:
        self.static = self.rot = None

    # -- per time point --------------------------------------------------------------------------

    def _time(self, t: torch.Tensor) -> dict:
        key = float(t)
        hit = self._tcache.get(key)
        if hit is not None:
            return hit
        dit = self.dit
        tt = t.reshape(1).float()
        t1 = dit.t_embedder(tt)  # (1, dim)
        t2 = dit.t_embedder2(tt)
        norms = []
        for blk in dit.transformer.layers:
            pair = []
            for ada in (blk.attention_norm, blk.ffn_norm):
                scale, shift = ada.project_layer(t1).split(self.dim, dim=-1)
                pair.append(((scale * ada.norm.weight).to(self.dtype), shift.to(self.dtype)))
            norms.append(pair)
        ada = dit.transformer.norm
        scale, shift = ada.project_layer(t1).split(self.dim, dim=-1)
        out_norm = ((scale * ada.norm.weight).to(self.dtype), shift.to(self.dtype))
        g = dit.wavenet.cond_layer(t2[:, :, None])  # (1, 2 * hidden * layers, 1)
        shift_f, scale_f = dit.final_layer.adaLN_modulation(t1).chunk(2, dim=1)
        hit = {"norms": norms, "out": out_norm, "g": g.to(self.dtype),
               "final": ((1 + scale_f).to(self.dtype), shift_f.to(self.dtype))}  # fmt: skip
        if len(self._tcache) >= 128:
            self._tcache.clear()
        self._tcache[key] = hit
        return hit

    # -- per step --------------------------------------------------------------------------------

    def _rope(self, qk: torch.Tensor) -> torch.Tensor:
        if self.rot is not None:
            z = torch.view_as_complex(qk.float().unflatten(-1, (-1, 2)).contiguous())
            return torch.view_as_real(z * self.rot).flatten(-2).to(qk.dtype)
        swapped = qk.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
        return torch.addcmul(qk * self.cos, swapped, self.sin)

    def _ada(self, h, scale, shift):
        y = F.rms_norm(h.float(), (self.dim,), eps=self.eps).to(h.dtype)
        return torch.addcmul(shift, y, scale)

    def velocity(self, x: torch.Tensor, t: torch.Tensor, cfg_rate: float) -> torch.Tensor:
        """x: (1, T, 80) fp32. Returns the guided velocity (1, T, 80) in fp32."""
        tc = self._time(t)
        T = x.shape[1]
        xd = x.to(self.dtype)
        h = self.static + self.merge_x(xd)  # (2, T, dim)
        skips = []
        for i, (blk, ((sa, ba), (sf, bf))) in enumerate(zip(self.blocks, tc["norms"])):
            if i in self.receive:
                h = blk["skip"](torch.cat([h, skips.pop()], dim=-1))
            y = self._ada(h, sa, ba)
            qkv = blk["qkv"](y).view(2, T, 3, self.heads, self.dh)
            qk = self._rope(qkv[:, :, :2])
            a = F.scaled_dot_product_attention(qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2),
                                               qkv[:, :, 2].transpose(1, 2))  # fmt: skip
            h = h + blk["wo"](a.transpose(1, 2).reshape(2, T, -1))
            y = self._ada(h, sf, bf)
            g1, g3 = blk["w13"](y).split(blk["hidden"], dim=-1)
            h = h + blk["w2"](F.silu(g1) * g3)
            if i in self.emit:
                skips.append(h)
        h = self._ada(h, *tc["out"])
        x_res = self.skip_res(h) + self.skip_x(xd)  # (2, T, dim)
        w = self.conv1(x_res).transpose(1, 2)  # (2, H, T)
        out = self._wavenet(w, tc["g"]).transpose(1, 2) + self.res_projection(x_res)
        scale, shift = tc["final"]
        out = F.layer_norm(out, (out.shape[-1],), eps=1e-6) * scale[:, None] + shift[:, None]
        out = self.final_linear(out).transpose(1, 2)
        v = F.conv1d(out, *self.conv2).float()  # (2, 80, T)
        cond, null = v.chunk(2)
        return ((1.0 + cfg_rate) * cond - cfg_rate * null).transpose(1, 2)

    def _wavenet(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        H = self.wn_hidden
        out = None
        for i, ((w, b, d, left, right), (rw, rb)) in enumerate(zip(self.wn_in, self.wn_res)):
            xi = F.conv1d(F.pad(x, (left, right), mode="reflect"), w, b, dilation=d)
            a = xi + g[:, i * 2 * H : (i + 1) * 2 * H]
            acts = torch.tanh(a[:, :H]) * torch.sigmoid(a[:, H:])
            rs = F.conv1d(acts, rw, rb)
            if i < self.wn_layers - 1:
                x = x + rs[:, :H]
                out = rs[:, H:] if out is None else out + rs[:, H:]
            else:
                out = rs if out is None else out + rs
        return out


def solve(fast: FastS2Mel, mu: torch.Tensor, prompt: torch.Tensor, style: torch.Tensor, steps: int, cfg_rate: float,
          generator, cancel=None) -> torch.Tensor | None:  # fmt: skip
    """Upstream's `CFM.inference` + `solve_euler`: (1, 80, T) mel (prompt frames zeroed), or None
    once `cancel` is set."""
    T = mu.shape[1]
    P = prompt.shape[-1]
    z = torch.randn([1, fast.n_mel, T], generator=generator, device=generator.device).to(mu.device)
    x = z.transpose(1, 2).contiguous()  # (1, T, 80)
    x[:, :P] = 0
    t_span = torch.linspace(0, 1, steps + 1, device=mu.device)
    t = t_span[0]
    fast.prepare(mu, prompt, style)
    try:
        for step in range(1, len(t_span)):
            if cancel is not None and cancel.is_set():
                return None
            dt = t_span[step] - t_span[step - 1]
            x = x + dt * fast.velocity(x, t, cfg_rate)
            t = t + dt
            x[:, :P] = 0
    finally:
        fast.clear()
    return x.transpose(1, 2)


def condition(models, latent: torch.Tensor, codes: list[int], prompt_condition: torch.Tensor) -> torch.Tensor:
    """The s2mel condition for generated codes, as upstream builds it: the GPT latent through
    `gpt_layer` added to the codes' semantic embedding, stretched by the length regulator to
    1.72 mel frames per code, after the reference's own condition."""
    s2 = models.s2mel.models
    dev = latent.device
    lat = s2["gpt_layer"](latent)
    codes_t = torch.tensor([codes], device=dev)
    S = models.semantic_codec.quantizer.vq2emb(codes_t.unsqueeze(1)).transpose(1, 2) + lat
    target = (torch.LongTensor([len(codes)]).to(dev) * 1.72).long()
    cond = s2["length_regulator"](S, ylens=target, n_quantizers=3, f0=None)[0]
    return torch.cat([prompt_condition, cond], dim=1)

