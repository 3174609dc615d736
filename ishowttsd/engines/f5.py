"""F5-TTS: the streamer's cloned voice (package `f5-tts`), on our own hot path.

The checkpoint loads through f5-tts's own classes (`CFM`, `DiT`); the per-step work runs in
`f5_fast` (see there for what it saves). Around it this engine does what a daemon can do once
instead of per call: each reference voice is read, resampled, RMS-normalised, trimmed and
turned into its mel once, kept in memory and on disk keyed by a hash of its content and
settings. Long text is split into sentence chunks: the first is synthesized alone and streamed
while the rest are synthesized together in one batch, joined with short crossfades.

torch and f5-tts are imported in `load()` only: the daemon starts without them unless this
engine is configured.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

import numpy as np
from pydantic import Field

from ishowttsd.engines.base import Cancel, Engine, EngineError, EngineSettings, Progress, Voice
from ishowttsd.hardware import cpu_has_amx, cpu_has_bf16  # noqa: F401  (cpu_has_bf16: re-exported)
from ishowttsd.messages import AudioChunk

# architectures of the released checkpoints (f5_tts/configs/*.yaml, `model.arch`)
ARCHS: dict[str, dict[str, Any]] = {
    "F5TTS_v1_Base": dict(dim=1024, depth=22, heads=16, ff_mult=2, text_dim=512, text_mask_padding=True, conv_layers=4),
    "F5TTS_v1_Small": dict(dim=768, depth=18, heads=12, ff_mult=2, text_dim=512, text_mask_padding=True, conv_layers=4),
    "F5TTS_Base": dict(dim=1024, depth=22, heads=16, ff_mult=2, text_dim=512, text_mask_padding=False, conv_layers=4),
}
SAMPLE_RATE, HOP, N_FFT, N_MELS = 24_000, 256, 1024, 100
_CACHE_VERSION = 1

# sentence ends (kept with the sentence); commas and spaces split an over-long sentence
_SENTENCE = re.compile(r"[^。！？!?；;…\n]*?(?:[。！？!?；;…\n]+|[.](?=\s|$)|$)")
_SOFT = re.compile(r"(?<=[，,、：:])|(?<=\s)")


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


@dataclass
class Reference:
    """A prepared reference voice: its mel (frames, n_mels), text, loudness and cache key."""

    key: str
    mel: Any  # torch.Tensor (frames, n_mels), fp32 on the engine's device
    text: str
    rms: float
    seconds: float


@dataclass
class _Job:
    index: int  # which output
    part: int  # which chunk of it
    text: str
    ref: Reference
    speed: float


class F5Engine(Engine):
    name = "f5"
    Settings = F5Settings

    def __init__(self, settings, ctx) -> None:
        super().__init__(settings, ctx)
        self._live_compiles: set[int] = set()  # lengths past the buckets compiled during speech
        self._voices: dict[str, Voice] = {}
        self._refs: dict[str, Reference] = {}  # voice id -> prepared reference
        self._mem_cache: dict[str, Reference] = {}  # cache key -> prepared reference
        self.cache_stats = {"memory": 0, "disk": 0, "miss": 0}
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

    def cache_dir(self) -> Path:
        return Path(self.ctx.state_dir) / "f5-voices"

    # -- loading ------------------------------------------------------------------------------

    def load(self, progress: Progress) -> None:
        s = self.settings
        progress("importing torch and f5-tts", None)
        try:
            import torch

            CFM, DiT = import_f5()
        except ImportError as e:
            raise EngineError(f"f5: {e.name or e} is not installed; install the extra: pip install 'ishowttsd[f5]'") from None
        from ishowttsd.engines import f5_fast

        if s.threads:
            torch.set_num_threads(s.threads)
        self.device = self._pick_device(torch)
        dtype, kind = self._pick_precision(torch, f5_fast)
        ckpt = self._path(s.checkpoint, "checkpoint")
        vocab_path = self._path(s.vocab, "vocab")
        if ckpt is None and not s.random_weights:
            raise EngineError(
                "f5: no checkpoint configured; set [engine.f5] checkpoint = \"…/model_1250000.safetensors\" "
                "(F5TTS_v1_Base) with vocab = \"…/vocab.txt\" and vocoder = \"…/vocos-mel-24khz\""
            )
        self.vocab = load_vocab(vocab_path) if vocab_path else _default_vocab()
        if s.model not in ARCHS and not s.arch:
            raise EngineError(f"f5: unknown model {s.model!r}; use one of {sorted(ARCHS)} or give [engine.f5] arch")
        arch = {**ARCHS.get(s.model, {}), **s.arch}
        progress("building the model", 0.1)
        try:
            dit = DiT(**arch, text_num_embeds=len(self.vocab), mel_dim=N_MELS)
        except TypeError as e:
            raise EngineError(f"f5: [engine.f5] arch is not valid for f5-tts's DiT: {e}") from None
        model = CFM(
            transformer=dit,
            mel_spec_kwargs=dict(n_fft=N_FFT, hop_length=HOP, win_length=N_FFT, n_mel_channels=N_MELS,
                                 target_sample_rate=SAMPLE_RATE, mel_spec_type="vocos"),
            odeint_kwargs=dict(method="euler"),
            vocab_char_map=self.vocab,
        )  # fmt: skip
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
        self._fast = f5_fast.FastDiT(model.transformer, kind, dtype if kind != "int8" else torch.float32)
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

    def _pick_precision(self, torch, f5_fast):
        """(dtype, Linear kernel kind) for the device, the dtype setting and fast mode."""
        s = self.settings
        names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if self.device.type == "cuda":
            name = "fp16" if s.dtype == "auto" else s.dtype
            self.dtype_name = name
            return names[name], "torch"
        onednn = s.kernels != "torch" and f5_fast.onednn_available()
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

    def _ref_settings(self) -> dict[str, Any]:
        s = self.settings
        return {"v": _CACHE_VERSION, "sr": SAMPLE_RATE, "hop": HOP, "n_fft": N_FFT, "mels": N_MELS,
                "rms": s.target_rms, "max_s": s.ref_max_s, "trim_db": s.trim_db}  # fmt: skip

    def prepare_reference(self, path: Path, text: str, what: str = "voice") -> Reference:
        import torch

        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise EngineError(f"voice {what!r}: reference_audio {path} does not exist") from None
        except OSError as e:
            raise EngineError(f"voice {what!r}: cannot read reference_audio {path}: {e.strerror}") from None
        text = normalize_ref_text(text)
        h = hashlib.sha256(data)
        h.update(b"\0" + text.encode() + b"\0" + json.dumps(self._ref_settings(), sort_keys=True).encode())
        key = h.hexdigest()[:32]
        with self._lock:
            if key in self._mem_cache:
                self.cache_stats["memory"] += 1
                return self._mem_cache[key]
        file = self.cache_dir() / f"{key}.npz"
        ref = None
        if file.exists():
            try:
                with np.load(file) as z:
                    mel = torch.from_numpy(z["mel"]).to(self.device)
                    ref = Reference(key, mel, text, float(z["rms"]), float(z["seconds"]))
                self.cache_stats["disk"] += 1
            except Exception as e:  # a damaged cache file is rebuilt, never fatal
                self.log.warning("reference cache %s unreadable (%s); rebuilding", file, e)
        if ref is None:
            self.cache_stats["miss"] += 1
            wav, sr = read_audio(data, path, what)
            audio, rms = self._clean_reference(torch, wav, sr, path, what)
            mel = self._mel(torch, audio)
            ref = Reference(key, mel, text, rms, audio.shape[-1] / SAMPLE_RATE)
            try:
                file.parent.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(".tmp.npz")
                np.savez(tmp, mel=mel.float().cpu().numpy(), rms=rms, seconds=ref.seconds)
                os.replace(tmp, file)
            except OSError as e:
                self.log.warning("cannot write the reference cache %s: %s", file, e)
        with self._lock:
            self._mem_cache[key] = ref
        return ref

    def _clean_reference(self, torch, wav: np.ndarray, sr: int, path: Path, what: str):
        """Mono, 24 kHz, RMS-normalised (up to target_rms, as upstream), edge silence trimmed."""
        import torchaudio.functional as AF

        s = self.settings
        x = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32))
        x = x.mean(dim=1) if x.ndim == 2 else x
        if sr != SAMPLE_RATE:
            x = AF.resample(x, sr, SAMPLE_RATE)
        # trim edge silence as upstream's remove_silence_edges does: 10 ms chunks counted from each
        # end while their RMS is under trim_db dBFS, then 50 ms of silence appended
        frame = SAMPLE_RATE // 100
        if x.shape[0] < frame:
            raise EngineError(f"voice {what!r}: reference_audio {path} is shorter than 10 ms; record 3-10 s of clear speech")
        start = _leading_silence(torch, x, frame, s.trim_db)
        if start >= x.shape[0]:
            raise EngineError(f"voice {what!r}: reference_audio {path} is silent; record 3-10 s of clear speech")
        end = x.shape[0] - _leading_silence(torch, x[start:].flip(0), frame, s.trim_db)
        x = x[start:end][: int(s.ref_max_s * SAMPLE_RATE)]
        if x.shape[0] < SAMPLE_RATE // 2:
            raise EngineError(f"voice {what!r}: reference_audio {path} has under 0.5 s of sound; record 3-10 s of clear speech")
        x = torch.cat([x, x.new_zeros(SAMPLE_RATE // 20)])
        rms = float(torch.sqrt(torch.mean(x.square())))
        if rms < s.target_rms:
            x = x * (s.target_rms / max(rms, 1e-8))
        return x, rms

    def _mel(self, torch, audio):
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
            jobs = [_Job(i, 0, c, ref, speed) for i, c in enumerate(group)]
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
            jobs += [_Job(i, p, c, ref, speed) for p, c in enumerate(self.plan(text))]
        waves = self._run_jobs(jobs, cancel or threading.Event())
        if waves is None:
            return []
        out: list[np.ndarray] = [np.zeros(0, np.float32) for _ in texts]
        xf = self._xf()
        for job, w in zip(jobs, waves):
            out[job.index] = w if job.part == 0 else crossfade_join(out[job.index], w, xf)
        return out

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
            if groups and len(groups[-1]) < self._pass_batch() and d <= self._duration(jobs[groups[-1][0]])[1] * self.settings.batch_ratio:
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

        from ishowttsd.engines import f5_fast

        s = self.settings
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
            pad_to = f5_fast.bucket(max(max(durs), min_pad), s.buckets) if s.compile else None
            if pad_to is not None and pad_to > max(s.buckets) and pad_to not in self._live_compiles:
                self._live_compiles.add(pad_to)
                self.log.warning("an utterance needs %d frames, past the largest compile bucket (%d): compiling for it "
                                 "now stalls speech once; add a bucket to [engine.f5] buckets or lower ref_max_s or "
                                 "chunk_bytes", pad_to, max(s.buckets))  # fmt: skip
            mel = f5_fast.sample(
                self._fast, cond, text_ids, durs, [r for r, _ in sizes], steps=s.steps, cfg_strength=s.cfg_strength,
                sway=s.sway_sampling_coef, seed=s.seed, pad_to=pad_to, cancel=cancel, on_step=on_step,
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


# -- helpers (also used by the tests and the benchmark) ------------------------------------------


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


def _default_vocab() -> dict[str, int]:
    from importlib.resources import files

    return load_vocab(Path(str(files("f5_tts").joinpath("infer/examples/vocab.txt"))))


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


def read_audio(data: bytes, path: Path, what: str) -> tuple[np.ndarray, int]:
    import io

    import soundfile as sf

    try:
        wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:
        raise EngineError(
            f"voice {what!r}: reference_audio {path} is not readable audio ({str(e)[:120]}); expected a WAV/FLAC/OGG file"
        ) from None
    if wav.shape[0] == 0:
        raise EngineError(f"voice {what!r}: reference_audio {path} is empty; record 3-10 s of clear speech")
    return wav, sr


def _leading_silence(torch, x, frame: int, thr_db: float) -> int:
    """Samples of silence at the start of `x`, in whole `frame` chunks (pydub's
    detect_leading_silence: the last chunk may be short)."""
    n = -(-x.shape[0] // frame)
    pad = torch.cat([x, x.new_zeros(n * frame - x.shape[0])]).view(n, frame)
    counts = torch.full((n,), float(frame))
    counts[-1] = x.shape[0] - (n - 1) * frame
    db = 10 * torch.log10((pad.square().sum(dim=1) / counts).clamp(min=1e-12))
    loud = torch.nonzero(db >= thr_db).flatten()
    return x.shape[0] if loud.numel() == 0 else int(loud[0]) * frame


def normalize_ref_text(text: str) -> str:
    """The transcript exactly as upstream feeds it to the model: `preprocess_ref_audio_text`
    ends it with ". " (or "。"), then `infer_batch_process` adds a space after a 1-byte last
    character, so a Latin transcript ends ".  ". Its UTF-8 length sets the speech rate
    (frames per byte), so this keeps our durations equal to upstream's for the same voice."""
    text = text.strip()
    if not text.endswith(". ") and not text.endswith("。"):
        text += " " if text.endswith(".") else ". "
    if len(text[-1].encode("utf-8")) == 1:
        text += " "
    return text


def split_chunks(text: str, max_bytes: int) -> list[str]:
    """Sentence chunks of at most `max_bytes` UTF-8 bytes (a longer sentence splits at commas
    or spaces); pieces under 10 bytes join a neighbour so no chunk is spoken extra slowly."""
    text = " ".join(text.split())
    sentences = [m.group(0).strip() for m in _SENTENCE.finditer(text) if m.group(0).strip()]
    pieces: list[str] = []
    for s in sentences:
        if len(s.encode()) <= max_bytes:
            pieces.append(s)
            continue
        cur = ""
        for part in _SOFT.split(s):
            if cur and len((cur + part).encode()) > max_bytes:
                pieces.append(cur.strip())
                cur = ""
            while len(part.encode()) > max_bytes:  # no comma or space: cut by characters
                cut = part
                while len(cut.encode()) > max_bytes:
                    cut = cut[: max(1, len(cut) * 3 // 4)]
                pieces.append(cut)
                part = part[len(cut) :]
            cur += part
        if cur.strip():
            pieces.append(cur.strip())
    out: list[str] = []
    for p in pieces:
        joined = f"{out[-1]}{'' if _cjk_end(out[-1]) else ' '}{p}" if out else p
        if out and (len(p.encode()) < 10 or len(out[-1].encode()) < 10) and len(joined.encode()) <= max_bytes:
            out[-1] = joined
        else:
            out.append(p)
    return out


def _cjk_end(s: str) -> bool:
    return bool(s) and ord(s[-1]) > 0x2E80


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
