"""The F5-TTS engine: the streamer's cloned voice (package `f5-tts`), on our own hot path.

The checkpoint loads through f5-tts's own classes (`weights`); the per-step work runs in
`fast` (see there for what it saves). Around it this engine does what a daemon can do once
instead of per call: each reference voice is prepared once and cached (`reference`). Long
text is split into sentence chunks (`text`): the first is synthesized alone and streamed
while the rest are synthesized together in one batch, joined with short crossfades.

torch and f5-tts are imported in `load()` only: the daemon starts without them unless this
engine is configured.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import numpy as np
from pydantic import Field

from ishowttsd.engines.base import Cancel, Engine, EngineError, EngineSettings, Progress, SpeechOptions, Voice
from ishowttsd.engines.f5.reference import Reference, ReferenceCache
from ishowttsd.engines.f5.text import normalize_ref_text, split_chunks
from ishowttsd.engines.f5.weights import (
    ARCHS, HOP, N_MELS, SAMPLE_RATE, build_model, default_vocab, import_f5, load_checkpoint, load_vocab, load_vocos, randomize,
)  # fmt: skip
from ishowttsd.hardware import cpu_has_amx
from ishowttsd.messages import AudioChunk


class F5Settings(EngineSettings):
    model: str = Field(default="F5TTS_v1_Base", description="architecture: " + ", ".join(ARCHS))
    arch: dict[str, Any] = Field(default_factory=dict, description="DiT keyword overrides (dim, depth, heads, ...)")
    checkpoint: str | None = Field(default=None, description=".safetensors or .pt file (EMA or plain)")
    vocab: str | None = Field(default=None, description="vocab.txt of the checkpoint")
    vocoder: str | None = Field(default=None, description="local Vocos folder: config.yaml + pytorch_model.bin")
    random_weights: bool = Field(default=False, description="no checkpoint: random weights (benchmarks only)")
    use_ema: bool = True
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    fast: bool = Field(default=False, description="CPU fast mode: bf16 where the CPU has it, else int8")
    fast_mode: Literal["auto", "bf16", "int8"] = "auto"
    kernels: Literal["auto", "onednn", "torch"] = "auto"  # CPU Linear kernels
    steps: int = Field(default=7, ge=1, le=64)
    cfg_strength: float = 2.0
    sway_sampling_coef: float | None = -1.0
    speed: float = Field(default=1.0, gt=0.1, le=4.0)
    short_text_speed: float = Field(default=0.3, gt=0.05, le=4.0, description="speed for texts under 10 bytes (as upstream)")
    seed: int | None = 0
    target_rms: float = 0.1
    ref_max_s: float = Field(default=12.0, gt=0.5)
    trim_db: float = Field(default=-42.0, description="edge silence threshold, RMS dBFS per 10 ms (as upstream)")
    chunk_bytes: int = Field(default=100, ge=10, description="UTF-8 bytes per sentence chunk")
    crossfade_ms: float = Field(default=30.0, ge=0.0, le=500.0)
    max_batch: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="chunks or utterances per forward pass (grouped by length); auto: 8 on CUDA, 1 on CPU, "
        "where a pass of 4 cost 4.25x one (measured on 2 cores: the CPU is already saturated by one) plus padding",
    )  # fmt: skip
    batch_ratio: float = Field(default=1.35, ge=1.0, description="longest/shortest in one batch")
    queue_batch: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="queued utterances the speaker synthesizes in one pass (max_batch groups one "
        "utterance's sentence chunks); auto: 8 on CUDA, where a batch costs about one utterance, 1 on "
        "CPU, where it costs the sum (measured 4.25x for 4 on 2 cores) and only delays paid speech",
    )  # fmt: skip
    compile: bool = False
    buckets: list[int] = Field(default_factory=lambda: [384, 512, 640, 768, 1024, 1280, 1536, 2048])
    threads: int | None = Field(default=None, ge=1)
    warmup_text: str = "Hello, 你好。"


class F5Options(SpeechOptions):
    """What one request may change: sampling steps, guidance strength and the noise seed."""

    steps: int | None = Field(default=None, ge=1, le=64)
    cfg_strength: float | None = Field(default=None, ge=0.0, le=10.0)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)


@dataclass
class _Job:
    index: int  # which output
    part: int  # which chunk of it
    text: str
    ref: Reference
    speed: float
    # (steps, cfg_strength, seed) from the voice's options; None: the engine's settings
    sampling: tuple | None = None


class F5Engine(Engine):
    name = "f5"
    Settings = F5Settings
    Options = F5Options
    clones = True

    def __init__(self, settings, ctx) -> None:
        super().__init__(settings, ctx)
        self._live_compiles: set[int] = set()  # lengths past the buckets compiled during speech
        self._voices: dict[str, Voice] = {}
        self._refs: dict[str, Reference] = {}  # voice id -> prepared reference
        self.references = ReferenceCache(Path(ctx.state_dir) / "f5-voices", settings, self.log)
        self.device = None
        self.dtype_name = ""
        self.kernel_kind = ""
        self.sample_rate = SAMPLE_RATE
        self.model = None  # f5_tts CFM
        self.vocoder = None
        self.vocab: dict[str, int] = {}
        self._fast = None
        self.last_mel: list = []  # the generated mels of the last forward (tests, benchmark)
        self._lock = threading.RLock()

    # -- paths and settings ---------------------------------------------------------------------

    def _path(self, value: str | None, key: str) -> Path | None:
        if not value:
            return None
        return Path(self.ctx.config.resolve(value)) if self.ctx.config is not None else Path(value)

    @property
    def cache_stats(self) -> dict[str, int]:
        """Where prepared references came from: memory, disk, or a miss (prepared now)."""
        return self.references.stats

    # -- loading ------------------------------------------------------------------------------

    def load(self, progress: Progress) -> None:
        s = self.settings
        progress("importing torch and f5-tts", None)
        try:
            import torch

            import_f5()
        except ImportError as e:
            raise EngineError(f"f5: {e.name or e} is not installed; install the extra from the checkout: pip install -c constraints.txt '.[f5]'") from None
        from ishowttsd.engines.f5.fast import FastDiT, onednn_available

        if s.threads:
            torch.set_num_threads(s.threads)
        self.device = self._pick_device(torch)
        dtype, kind = self._pick_precision(torch, onednn_available())
        ckpt = self._path(s.checkpoint, "checkpoint")
        vocab_path = self._path(s.vocab, "vocab")
        if ckpt is None and not s.random_weights:
            raise EngineError(
                "f5: no checkpoint configured; set [engine.f5] checkpoint = \"…/model_1250000.safetensors\" "
                "(F5TTS_v1_Base) with vocab = \"…/vocab.txt\" and vocoder = \"…/vocos-mel-24khz\""
            )
        self.vocab = load_vocab(vocab_path) if vocab_path else default_vocab()
        if s.model not in ARCHS and not s.arch:
            raise EngineError(f"f5: unknown model {s.model!r}; use one of {sorted(ARCHS)} or give [engine.f5] arch")
        arch = {**ARCHS.get(s.model, {}), **s.arch}
        progress("building the model", 0.1)
        model = build_model(arch, self.vocab)
        if ckpt is not None:
            progress(f"loading {ckpt.name}", 0.3)
            load_checkpoint(model, ckpt, s.use_ema, s.model, vocab_path)
        else:
            randomize(model, seed=0)
        model = model.eval().to(self.device)
        if dtype != torch.float32 and kind != "int8":
            model.transformer.to(dtype)
        self.model = model
        progress("loading the vocoder", 0.6)
        self.vocoder = load_vocos(self._path(s.vocoder, "vocoder"), s.random_weights, self.device)
        if s.compile and kind == "onednn":
            kind = "torch"  # inductor cannot lower the eager oneDNN op; it picks its own CPU kernels
        self.kernel_kind = kind
        self._fast = FastDiT(model.transformer, kind, dtype if kind != "int8" else torch.float32)
        if s.compile:
            progress("compiling (torch.compile)", 0.8)
            import warnings

            with warnings.catch_warnings():  # inductor's own imports warn (torch.jit.script_method)
                warnings.simplefilter("ignore", DeprecationWarning)
                import torch._inductor.compile_fx  # noqa: F401
            self._fast.compiled = True
            self._fast.step = torch.compile(self._fast.step, dynamic=False)
        self.loaded = True
        progress("f5 ready", 1.0)

    def _pick_device(self, torch):
        want = self.settings.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"f5: device {want!r} asked for, but torch sees no CUDA GPU; set [engine.f5] device = \"cpu\"")
        return torch.device(want)

    def _pick_precision(self, torch, onednn_available: bool):
        """(dtype, Linear kernel kind) for the device, the dtype setting and fast mode."""
        s = self.settings
        names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if self.device.type == "cuda":
            name = "fp16" if s.dtype == "auto" else s.dtype
            self.dtype_name = name
            return names[name], "torch"
        onednn = s.kernels != "torch" and onednn_available
        base = "onednn" if onednn else "torch"
        if s.fast:
            mode = s.fast_mode
            if mode == "auto":
                # measured (docs/f5.md): with AMX, bf16 is the fast one; with AVX512-BF16 alone,
                # int8 dynamic quantization was both faster (1.80x vs 1.47x) and closer to fp32
                mode = "bf16" if cpu_has_amx() and onednn else "int8"
            if mode == "bf16":
                self.dtype_name = "bf16"
                return torch.bfloat16, base
            self.dtype_name = "int8-dynamic"
            return torch.float32, "int8"
        name = "fp32" if s.dtype == "auto" else s.dtype
        self.dtype_name = name
        return names[name], base

    # -- voices ----------------------------------------------------------------------------------

    def voices(self) -> list[Voice]:
        return list(self._voices.values())

    def add_voice(self, voice: Voice) -> Voice:
        """Prepare (or re-prepare after an edit) a `[[voices]]` entry; cached by content hash."""
        if not voice.reference_audio or not (voice.reference_text or "").strip():
            raise EngineError(f"voice {voice.id!r}: an f5 voice needs reference_audio (a WAV) and reference_text (its transcript)")
        ref = self.prepare_reference(Path(voice.reference_audio), voice.reference_text, voice.id)
        with self._lock:
            self._refs[voice.id] = ref
            voice.description = voice.description or f"cloned from {Path(voice.reference_audio).name} ({ref.seconds:.1f} s)"
            self._voices[voice.id] = voice
        return voice

    def prepare_reference(self, path: Path, text: str, what: str = "voice") -> Reference:
        """The prepared reference for an audio file and its transcript (cached; see `reference`)."""
        return self.references.prepare(path, text, what, self.device, self._mel)

    def _mel(self, audio):
        import torch

        with torch.inference_mode():
            mel = self.model.mel_spec.to(self.device)(audio[None].to(self.device))  # (1, mels, frames)
        return mel[0].T.contiguous().float()

    # -- synthesis ----------------------------------------------------------------------------

    def _reference_for(self, voice: Voice) -> Reference:
        ref = self._refs.get(voice.id)
        if ref is None:  # a voice not prepared yet (or another engine's): prepare it, or say what is missing
            self.add_voice(voice)
            ref = self._refs[voice.id]
        return ref

    def plan(self, text: str) -> list[str]:
        return split_chunks(text, self.settings.chunk_bytes)

    def synthesize(self, text: str, voice: Voice, cancel: threading.Event) -> Iterator[AudioChunk]:
        """Stream `text`: the first sentence chunk alone, then the rest as one batch."""
        if not self.loaded:
            raise EngineError("f5: not loaded")
        ref = self._reference_for(voice)
        speed = self.settings.speed * (voice.speed or 1.0)
        chunks = self.plan(text)
        if not chunks:
            return
        xf = self._xf()
        tail = None
        groups = [chunks[:1], chunks[1:]] if len(chunks) > 1 else [chunks]
        for group in groups:
            jobs = [_Job(i, 0, c, ref, speed, self._sampling(voice)) for i, c in enumerate(group)]
            waves = self._run_jobs(jobs, cancel)
            if waves is None:
                return
            for w in waves:
                if tail is not None:
                    w = crossfade(tail, w, xf)
                tail, body = (w[-xf:], w[:-xf]) if xf and len(w) > xf else (None, w)
                if cancel.is_set():
                    return
                if len(body):
                    yield AudioChunk(body.astype(np.float32), SAMPLE_RATE)
        if tail is not None and not cancel.is_set():
            yield AudioChunk(tail.astype(np.float32), SAMPLE_RATE)

    def _batch_size(self, setting: int | str) -> int:
        """A batch setting's value; "auto" is 8 on CUDA (a batch costs about what one costs
        there) and 1 on CPU (one utterance already saturates it)."""
        if setting == "auto":
            return 8 if self.device is not None and self.device.type == "cuda" else 1
        return int(setting)

    def _pass_batch(self) -> int:
        """Chunks or utterances per forward pass (`max_batch`)."""
        return self._batch_size(self.settings.max_batch)

    @property
    def max_batch(self) -> int:
        """How many queued utterances the speaker hands to `synthesize_batch` at once."""
        return self._batch_size(self.settings.queue_batch)

    def synthesize_batch(self, texts: list[str], voices: list[Voice], cancel: Cancel | None = None) -> list[np.ndarray]:
        """Synthesize several utterances together (one forward per ODE step for each length
        group); returns one float32 waveform per text, each equal to its solo synthesis, or
        [] once `cancel` is set."""
        if not self.loaded:
            raise EngineError("f5: not loaded")
        if len(texts) != len(voices):
            raise ValueError("texts and voices differ in length")
        jobs = []
        for i, (text, voice) in enumerate(zip(texts, voices)):
            ref = self._reference_for(voice)
            speed = self.settings.speed * (voice.speed or 1.0)
            jobs += [_Job(i, p, c, ref, speed, self._sampling(voice)) for p, c in enumerate(self.plan(text))]
        waves = self._run_jobs(jobs, cancel or threading.Event())
        if waves is None:
            return []
        out: list[np.ndarray] = [np.zeros(0, np.float32) for _ in texts]
        xf = self._xf()
        for job, w in zip(jobs, waves):
            out[job.index] = w if job.part == 0 else crossfade_join(out[job.index], w, xf)
        return out

    def _sampling(self, voice: Voice) -> tuple:
        """(steps, cfg_strength, seed) for a voice: its options (a request's) over the settings."""
        s, o = self.settings, voice.options
        return (int(o.get("steps", s.steps)), float(o.get("cfg_strength", s.cfg_strength)), o.get("seed", s.seed))

    def _xf(self) -> int:
        return int(self.settings.crossfade_ms * SAMPLE_RATE / 1000)

    def _duration(self, job: _Job) -> tuple[int, int]:
        """(reference frames, total frames) by upstream's rule: the reference's length in hops
        (its mel has one frame more) sets the speech rate in frames per UTF-8 byte."""
        ref_frames = job.ref.mel.shape[0]
        ref_len = ref_frames - 1
        gen_bytes = len(job.text.encode("utf-8"))
        speed = job.speed if gen_bytes >= 10 else self.settings.short_text_speed
        gen = int(ref_len / len(job.ref.text.encode("utf-8")) * gen_bytes / speed)
        return ref_frames, max(ref_len + gen, ref_frames + 1)

    def _run_jobs(self, jobs: list[_Job], cancel: threading.Event) -> list[np.ndarray] | None:
        """Synthesize chunk jobs in length-grouped batches; waveforms in job order."""
        sized = sorted(range(len(jobs)), key=lambda i: self._duration(jobs[i])[1])
        groups: list[list[int]] = []
        for i in sized:
            d = self._duration(jobs[i])[1]
            head = jobs[groups[-1][0]] if groups else None
            if (head is not None and len(groups[-1]) < self._pass_batch() and head.sampling == jobs[i].sampling
                    and d <= self._duration(head)[1] * self.settings.batch_ratio):  # fmt: skip
                groups[-1].append(i)
            else:
                groups.append([i])
        out: list[np.ndarray | None] = [None] * len(jobs)
        for g in groups:
            waves = self._forward([jobs[i] for i in g], cancel)
            if waves is None:
                return None
            for i, w in zip(g, waves):
                out[i] = w
        return out  # type: ignore[return-value]

    def _forward(self, jobs: list[_Job], cancel: threading.Event, on_step=None,
                 min_pad: int = 0) -> list[np.ndarray] | None:  # fmt: skip
        import torch
        from f5_tts.model.utils import convert_char_to_pinyin, list_str_to_idx

        from ishowttsd.engines.f5.fast import bucket, sample

        s = self.settings
        steps, cfg_strength, seed = jobs[0].sampling or (s.steps, s.cfg_strength, s.seed)
        sizes = [self._duration(j) for j in jobs]
        texts = convert_char_to_pinyin([j.ref.text + j.text for j in jobs])
        with self._lock, torch.inference_mode():
            text_ids = list_str_to_idx(texts, self.vocab).to(self.device)
            n_ref = max(r for r, _ in sizes)
            cond = torch.zeros(len(jobs), n_ref, N_MELS, device=self.device)
            for i, j in enumerate(jobs):
                cond[i, : j.ref.mel.shape[0]] = j.ref.mel
            # at least text length + 1 frames, as upstream
            tl = (text_ids != -1).sum(dim=-1).tolist()
            durs = [max(d, max(t, r) + 1) for (r, d), t in zip(sizes, tl)]
            pad_to = bucket(max(max(durs), min_pad), s.buckets) if s.compile else None
            if pad_to is not None and pad_to > max(s.buckets) and pad_to not in self._live_compiles:
                self._live_compiles.add(pad_to)
                self.log.warning("an utterance needs %d frames, past the largest compile bucket (%d): compiling for it "
                                 "now stalls speech once; add a bucket to [engine.f5] buckets or lower ref_max_s or "
                                 "chunk_bytes", pad_to, max(s.buckets))  # fmt: skip
            mel = sample(
                self._fast, cond, text_ids, durs, [r for r, _ in sizes], steps=steps, cfg_strength=cfg_strength,
                sway=s.sway_sampling_coef, seed=seed, pad_to=pad_to, cancel=cancel, on_step=on_step,
            )  # fmt: skip
            if mel is None:
                return None
            self.last_mel = [mel[i, r:d].clone() for i, ((r, _), d) in enumerate(zip(sizes, durs))]
            waves = []
            for i, ((r, _), d) in enumerate(zip(sizes, durs)):
                w = self._vocode(torch, mel[i : i + 1, r:d])
                if jobs[i].ref.rms < s.target_rms:
                    w = w * (jobs[i].ref.rms / s.target_rms)
                waves.append(w)
        return waves

    def _vocode(self, torch, mel) -> np.ndarray:
        """Vocos in the engine's precision policy: half on CUDA, bf16 in CPU fast mode."""
        m = mel.transpose(1, 2).float()
        if self.device.type == "cuda" and self.dtype_name in ("fp16", "bf16"):
            dt = torch.float16 if self.dtype_name == "fp16" else torch.bfloat16
            with torch.autocast("cuda", dtype=dt):
                feats = self.vocoder.backbone(m)
            w = self.vocoder.head(feats.float())
        elif self.device.type == "cpu" and self.dtype_name == "bf16":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                feats = self.vocoder.backbone(m)
            w = self.vocoder.head(feats.float())
        else:
            w = self.vocoder.decode(m)
        return w[0].float().cpu().numpy()

    # -- warm-up ------------------------------------------------------------------------------

    def warmup(self, progress: Progress) -> None:
        """Run the whole path once on a synthetic 0.5 s reference (every bucket when compiling)."""
        import torch

        s = self.settings
        g = torch.Generator().manual_seed(1)
        # a 0.5 s synthetic reference keeps the warm-up job shorter than the smallest bucket,
        # so padding reaches every bucket (a 2 s one overshot the small ones)
        mel = (torch.randn(int(0.5 * SAMPLE_RATE / HOP), N_MELS, generator=g) - 5).to(self.device)
        ref = Reference("warmup", mel, normalize_ref_text("Warm up."), 0.1, 0.5)
        job = _Job(0, 0, s.warmup_text, ref, 1.0)
        lengths = sorted(set(s.buckets)) if s.compile else [0]  # every bucket: none compiles live
        short = self._duration(job)[1] + 1
        if s.compile and lengths and short > lengths[0]:
            self.log.warning("warm-up text %r is too long to compile the %d-frame bucket; shorten [engine.f5] warmup_text",
                             s.warmup_text, lengths[0])  # fmt: skip
        total = len(lengths) * s.steps
        done = [0]

        def on_step(i, n):
            done[0] += 1
            progress("compiling and warming up" if s.compile else "warming up", min(1.0, done[0] / total))

        for length in lengths:  # one compile per bucket now, not during live speech
            self._forward([job], threading.Event(), on_step=on_step, min_pad=length)
        self.warm = True

    def info(self) -> dict[str, Any]:
        d = super().info()
        d.update({
            "model": self.settings.model, "device": str(self.device) if self.device else None,
            "dtype": self.dtype_name, "kernels": self.kernel_kind, "steps": self.settings.steps,
            "compile": self.settings.compile, "reference_cache": dict(self.cache_stats),
        })  # fmt: skip
        return d


def crossfade(tail: np.ndarray, nxt: np.ndarray, n: int) -> np.ndarray:
    """`nxt` with its first len(tail) samples blended from `tail` (a linear crossfade)."""
    n = min(n, len(tail), len(nxt))
    if n == 0:
        return nxt
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    head = tail[-n:] * (1 - ramp) + nxt[:n] * ramp
    return np.concatenate([tail[:-n], head, nxt[n:]]) if len(tail) > n else np.concatenate([head, nxt[n:]])


def crossfade_join(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """a + b overlapped by n samples with a linear crossfade (what `synthesize` streams)."""
    n = min(n, len(b))
    if n == 0 or len(a) <= n:
        return np.concatenate([a, b])
    return np.concatenate([a[:-n], crossfade(a[-n:], b, n)])
