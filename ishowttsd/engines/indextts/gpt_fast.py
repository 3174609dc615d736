"""Our IndexTTS2 GPT decoding loop: the weights of upstream's `UnifiedVoice`, a static loop.

Upstream decodes through transformers' `generate()`: per token it rebuilds the model inputs,
grows a DynamicCache by concatenation, runs GPT-2's attention module with its mask handling,
and applies logits processors as separate objects. Ours, with the same mathematics:

- one preallocated KV cache, written in place; a decoding step attends to its prefix with no mask;
- q/k/v as one matmul, the MLP's GELU fused where the kernel allows (oneDNN on CPU);
- sampling exactly as transformers does it for `do_sample=True, num_beams=1` (repetition
  penalty over every id seen, the fake prompt ids included, then temperature, top-k, top-p,
  softmax, one multinomial draw from the caller's generator), so a seeded run draws the
  same tokens as upstream's `infer(..., num_beams=1)` seeded the same way;
- no second pass for the latent that s2mel reads: upstream runs the whole sequence through the
  GPT again after decoding, but with transformers 5 the decoding already put the k-th code at
  mel position k, as that pass does, so its outputs are the decoding's own hidden states (kept
  as they are produced).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ishowttsd.engines.kernels import Linear


@dataclass
class Sampling:
    temperature: float = 0.8
    top_k: int = 30
    top_p: float = 0.8
    repetition_penalty: float = 10.0


@dataclass
class _Layer:
    ln1: tuple
    qkv: Linear
    proj: Linear
    ln2: tuple
    fc: Linear
    fc2: Linear


def _ln(m, dtype):
    return (m.weight.detach().to(dtype), m.bias.detach().to(dtype), m.eps)


class FastGPT:
    """Runs a loaded `UnifiedVoice`'s GPT-2 with a static KV cache (batch of one)."""

    def __init__(self, uv, kind: str, dtype: torch.dtype) -> None:
        gpt = uv.gpt
        self.kind, self.dtype = kind, dtype
        self.dim, self.heads = uv.model_dim, uv.heads
        self.dh = self.dim // self.heads
        act = "gelu" if gpt.config.activation_function in ("gelu_new", "gelu_pytorch_tanh") else None
        if act is None:
            raise ValueError(f"GPT-2 activation {gpt.config.activation_function!r} is not supported by the fast path")
        lin = lambda m, a=None: Linear(m.weight.detach().t(), m.bias, kind, dtype, a)  # noqa: E731  (Conv1D is (in, out))
        self.layers = [
            _Layer(_ln(b.ln_1, dtype), lin(b.attn.c_attn), lin(b.attn.c_proj), _ln(b.ln_2, dtype), lin(b.mlp.c_fc, act),
                   lin(b.mlp.c_proj))
            for b in gpt.h
        ]  # fmt: skip
        if kind != "int8" and dtype == gpt.h[0].attn.c_attn.weight.dtype:
            # upstream's modules (the num_beams > 1 path) read our (out, in) copies through transposed
            # views: the GPT's weights are held once, not twice (1.9 GB at full size)
            for b, layer in zip(gpt.h, self.layers):
                for conv, ours in ((b.attn.c_attn, layer.qkv), (b.attn.c_proj, layer.proj), (b.mlp.c_fc, layer.fc),
                                   (b.mlp.c_proj, layer.fc2)):  # fmt: skip
                    conv.weight.data = ours.w.t()
        self.ln_f = _ln(gpt.ln_f, dtype)
        self.final_norm = _ln(uv.final_norm, dtype)
        self.head = Linear(uv.mel_head.weight, uv.mel_head.bias, kind, dtype)
        self.mel_emb = uv.mel_embedding.weight.detach().to(dtype)
        self.mel_pos = uv.mel_pos_embedding.emb.weight.detach().to(dtype)
        self.text_emb = uv.text_embedding.weight.detach().to(dtype)
        self.text_pos = uv.text_pos_embedding.emb.weight.detach().to(dtype)
        self.start_mel, self.stop_mel = uv.start_mel_token, uv.stop_mel_token
        self.start_text, self.stop_text = uv.start_text_token, uv.stop_text_token
        self.vocab = uv.number_mel_codes
        self.device = self.mel_emb.device
        self.k = self.v = None  # (layers, heads, capacity, dh)

    # -- the transformer -------------------------------------------------------------------------

    def _reserve(self, n: int) -> None:
        if self.k is None or self.k.shape[2] < n:
            n = max(n, 256)
            shape = (len(self.layers), self.heads, n, self.dh)
            self.k = torch.empty(shape, dtype=self.dtype, device=self.device)
            self.v = torch.empty(shape, dtype=self.dtype, device=self.device)

    def _run(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """h: (1, T, dim) at cache positions start..start+T-1, attending causally to everything
        before; K/V written into the cache. Returns GPT-2's output (after ln_f)."""
        T = h.shape[1]
        end = start + T
        mask = None
        if T > 1 and start > 0:
            mask = torch.arange(end, device=h.device)[None] <= torch.arange(start, end, device=h.device)[:, None]
        for i, layer in enumerate(self.layers):
            y = F.layer_norm(h, (self.dim,), *layer.ln1)
            qkv = layer.qkv(y).view(T, 3, self.heads, self.dh)
            self.k[i, :, start:end] = qkv[:, 1].transpose(0, 1)
            self.v[i, :, start:end] = qkv[:, 2].transpose(0, 1)
            q = qkv[:, 0].transpose(0, 1)[None]
            k, v = self.k[i : i + 1, :, :end], self.v[i : i + 1, :, :end]
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=T > 1 and start == 0)
            h = h + layer.proj(a[0].transpose(0, 1).reshape(1, T, self.dim))
            y = F.layer_norm(h, (self.dim,), *layer.ln2)
            h = h + layer.fc2(layer.fc(y))
        return F.layer_norm(h, (self.dim,), *self.ln_f)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(F.layer_norm(h, (self.dim,), *self.final_norm))[0, -1].float()

    # -- one segment -----------------------------------------------------------------------------

    def prefix(self, conds: torch.Tensor, text_ids: list[int]) -> torch.Tensor:
        """[conditioning][start_text text stop_text][start_mel], as upstream's prepare_gpt_inputs and
        its first decoding step build it. conds: (1, n, dim)."""
        ids = [self.start_text] + [t for t in text_ids if t not in (self.start_text, self.stop_text)] + [self.stop_text]
        ids_t = torch.tensor(ids, device=self.device)
        text = self.text_emb[ids_t] + self.text_pos[: len(ids)]
        start = self.mel_emb[self.start_mel] + self.mel_pos[0]
        return torch.cat([conds[0].to(self.dtype), text, start[None]])[None]

    def generate(self, prefix: torch.Tensor, max_tokens: int, sampling: Sampling, generator, cancel=None):
        """Sample codes after `prefix` until the stop token or `max_tokens`. Returns (codes list,
        the start token's hidden state), or None once `cancel` is set."""
        P = prefix.shape[1]
        self._reserve(P + max_tokens + 1)
        h = self._run(prefix.to(self.dtype), 0)[:, -1:]
        self._hidden = [h]
        logits = self._logits(h)
        seen = torch.zeros(self.vocab, dtype=torch.bool, device=self.device)
        seen[1] = seen[self.start_mel] = True  # transformers penalises the fake prompt ids too
        codes: list[int] = []
        pos = P
        while True:
            if cancel is not None and cancel.is_set():
                return None
            tok = int(sample(logits, seen, sampling, generator))
            if tok == self.stop_mel:
                break
            codes.append(tok)
            seen[tok] = True
            if len(codes) >= max_tokens:
                break
            emb = (self.mel_emb[tok] + self.mel_pos[len(codes)]).view(1, 1, self.dim)
            h = self._run(emb, pos)
            self._hidden.append(h)
            logits = self._logits(h)
            pos += 1
        return codes

    def teacher_forced(self, prefix: torch.Tensor, codes: list[int]) -> torch.Tensor:
        """The latent for given codes without sampling (the decoding's forward passes, batched)."""
        self._reserve(prefix.shape[1] + len(codes) + 1)
        h = self._run(prefix.to(self.dtype), 0)[:, -1:]
        self._hidden = [h]
        if len(codes) > 1:
            ids = torch.tensor(codes[:-1], device=self.device)
            self._hidden.append(self._run((self.mel_emb[ids] + self.mel_pos[1 : len(codes)])[None], prefix.shape[1]))
        return self.latent(codes)

    def latent(self, codes: list[int]) -> torch.Tensor:
        """What upstream's `UnifiedVoice.forward` returns for the codes just generated: (1, n, dim),
        the final norm of the outputs at [start, c1 .. c(n-1)]."""
        h = torch.cat(self._hidden, dim=1)[:, : len(codes)]
        return F.layer_norm(h, (self.dim,), *self.final_norm).float()


def sample(logits: torch.Tensor, seen: torch.Tensor, s: Sampling, generator) -> torch.Tensor:
    """One token as transformers' sampling draws it (fp32 logits of the last position)."""
    if s.repetition_penalty != 1.0:
        pen = torch.where(logits < 0, logits * s.repetition_penalty, logits / s.repetition_penalty)
        logits = torch.where(seen, pen, logits)
    if s.temperature != 1.0:
        logits = logits / s.temperature
    if s.top_k:
        k = min(s.top_k, logits.shape[-1])
        logits = logits.masked_fill(logits < torch.topk(logits, k)[0][-1], float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cum <= (1 - s.top_p)
        drop[-1:] = False
        logits = logits.masked_fill(drop.scatter(0, idx, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1)[None], 1, generator=generator)[0, 0]
