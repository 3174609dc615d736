"""IndexTTS2: a second cloned voice, with emotion (module `indextts`), on our own hot path.

Loading goes through the `indextts` package's own classes from local folders (`files`); each
voice's conditioning is computed once and cached (`voices`); a segment is GPT codes from our
static decoding loop (`gpt_fast`), s2mel's flow matching on our per-step path (`s2mel`) and
BigVGAN (`vocoder`). Long text streams: the first sentence is a segment of its own, synthesized
and played while the rest is generated; segments are joined by upstream's 200 ms of silence.

torch and indextts are imported in `load()` only: the daemon starts without them unless this
engine is configured.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from pydantic import Field

from ishowttsd.engines.base import Engine, EngineError, EngineSettings, Progress, Voice
from ishowttsd.messages import AudioChunk

SAMPLE_RATE = 22_050


class IndexTTSSettings(EngineSettings):
    model_dir: str | None = Field(default=None, description="local IndexTTS-2 folder (config.yaml, gpt.pth, s2mel.pth, bpe.model, ...)")
    config: str | None = Field(default=None, description="config.yaml (default: model_dir/config.yaml)")
    w2v_bert: str | None = Field(default=None, description="local facebook/w2v-bert-2.0 (default: model_dir/w2v-bert-2.0)")
    maskgct: str | None = Field(default=None, description="local amphion/MaskGCT with semantic_codec/model.safetensors (default: model_dir/MaskGCT)")
    campplus: str | None = Field(default=None, description="local funasr/campplus with campplus_cn_common.bin (default: model_dir/campplus)")
    bigvgan: str | None = Field(default=None, description="local nvidia/bigvgan_v2_22khz_80band_256x (default: model_dir/bigvgan)")
    qwen_emotion: str | None = Field(default=None, description="the Qwen emotion folder (default: model_dir/qwen0.6bemo4-merge)")
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    fast: bool = Field(default=False, description="CPU fast mode: bf16 where the CPU has AMX, else int8 (GPT and s2mel)")
    fast_mode: Literal["auto", "bf16", "int8"] = "auto"
    kernels: Literal["auto", "onednn", "torch"] = "auto"
    use_cuda_kernel: bool = Field(default=True, description="BigVGAN's fused CUDA activation, where it builds")
    normalize: bool = Field(default=True, description="upstream's text normaliser (numbers, units, ...; nemo-text-processing)")
    normalizer_cache: str | None = Field(default=None, description="its grammar cache (default: <state_dir>/indextts-normalizer)")
    language: Literal["zh", "en"] | None = None  # None: detected per text, as upstream
    seed: int | None = 0
    temperature: float = Field(default=0.8, gt=0.0)
    top_k: int = Field(default=30, ge=0)
    top_p: float = Field(default=0.8, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=10.0, gt=0.0)
    num_beams: int = Field(default=1, ge=1, le=8, description="1: our decoding loop; >1: upstream's beam sampling through transformers (slower)")
    max_mel_tokens: int = Field(default=1500, ge=8, description="codes per segment at most (50 per second of speech)")
    max_text_tokens_per_segment: int = Field(default=120, ge=8)
    stream_first_sentence: bool = True
    diffusion_steps: int = Field(default=25, ge=1, le=100)
    cfg_rate: float = Field(default=0.7, ge=0.0)
    interval_silence_ms: int = Field(default=200, ge=0, le=2000)
    threads: int | None = Field(default=None, ge=1)
    warmup_text: str = "Hello, 你好。"


class IndexTTSEngine(Engine):
    name = "indextts"
    Settings = IndexTTSSettings

    def __init__(self, settings, ctx) -> None:
        super().__init__(settings, ctx)
        self.sample_rate = SAMPLE_RATE
        self.device = None
        self.dtype_name = ""
        self.kernel_kind = ""
        self.models = None
        self.paths = None
        self.frontend = None
        self.qwen = None
        self._gpt = None
        self._s2mel = None
        self._voices: dict[str, Voice] = {}
        self._prepared: dict[str, dict] = {}  # voice id -> {"speaker", "options", "conds"}
        self._cache = None
        self._fingerprint = ""
        self._chat_emotions: dict[str, list[float]] = {}  # emo_from_text: message -> weights, LRU
        self._lock = threading.RLock()
        self.last_codes: list[list[int]] = []  # codes of the last synthesis, per segment (tests, benchmark)
        self.last_mel: list = []  # its s2mel output per segment
        self.timings: dict[str, float] = {}

    # -- loading -----------------------------------------------------------------------------

    def _resolve(self, value: str) -> Path:
        return Path(self.ctx.config.resolve(value)) if self.ctx.config is not None else Path(value).expanduser()

    def cache_dir(self) -> Path:
        return Path(self.ctx.state_dir) / "indextts-voices"

    def load(self, progress: Progress) -> None:
        s = self.settings
        progress("importing torch and indextts", None)
        try:
            import torch

            import ishowttsd.engines.indextts.files as files
            from ishowttsd.engines.indextts.files import quiet

            with quiet():
                import indextts  # noqa: F401
        except ImportError as e:
            raise EngineError(
                f"indextts: {e.name or e} is not installed; install the extra from the checkout: pip install -c constraints.txt '.[indextts]'"
            ) from None
        import ishowttsd.engines.kernels as kernels
        import ishowttsd.engines.indextts.frontend as frontend
        import ishowttsd.engines.indextts.gpt_fast as gpt_fast
        import ishowttsd.engines.indextts.s2mel as s2mel
        import ishowttsd.engines.indextts.voices as voices

        if s.threads:
            torch.set_num_threads(s.threads)
        self.device = self._pick_device(torch)
        dtype, kind = self._pick_precision(torch, kernels)
        self.paths = files.resolve_paths(s, self._resolve)
        cfg = files.read_config(self.paths)
        models = files.load_models(self.paths, cfg, self.device, progress, s.use_cuda_kernel)
        # upstream sizes s2mel's rotary table here; its estimator is what the tests compare against
        models.s2mel.models["cfm"].estimator.setup_caches(max_batch_size=1, max_seq_length=8192)
        progress("loading the text front end", 0.8)
        cache = frontend.normalizer_cache(self.ctx.state_dir, s.normalizer_cache, self._resolve)
        self.frontend = frontend.FrontEnd(models.bpe, s.normalize, cache, s.language)
        self.frontend.load_glossary(self.paths.model_dir / "glossary.yaml")
        progress("preparing the fast path", 0.9)
        with torch.inference_mode():
            # decoding is one row at a time (memory-bound): oneDNN's pointwise linear measured slower
            # there than F.linear's GEMV (12.6 s against 18.9 s for 50 codes at full size)
            self._gpt = gpt_fast.FastGPT(models.gpt, "torch" if kind == "onednn" else kind, dtype)
            self._s2mel = s2mel.FastS2Mel(models.s2mel.models["cfm"].estimator, "int8" if kind == "int8" else kind,
                                          torch.float32 if kind == "int8" else dtype)  # fmt: skip
        self.kernel_kind = kind
        self.models = models
        self._cache = voices.ConditioningCache(self.cache_dir(), self.device, self.log)
        self._fingerprint = self.paths.fingerprint(cfg)
        self.loaded = True
        progress("indextts ready", 1.0)

    def _pick_device(self, torch):
        want = self.settings.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        if want.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"indextts: device {want!r} asked for, but torch sees no CUDA GPU; set [engine.indextts] device = \"cpu\"")
        return torch.device(want)

    def _pick_precision(self, torch, kernels):
        """(dtype, Linear kernel kind): fp16 on CUDA; CPU fp32, or the fast mode."""
        from ishowttsd.hardware import cpu_has_amx

        s = self.settings
        names = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
        if self.device.type == "cuda":
            name = "fp16" if s.dtype == "auto" else s.dtype
            self.dtype_name = name
            return names[name], "torch"
        base = "onednn" if s.kernels != "torch" and kernels.onednn_available() else "torch"
        if s.fast:
            mode = s.fast_mode
            if mode == "auto":
                mode = "bf16" if cpu_has_amx() and base == "onednn" else "int8"
            self.dtype_name = "bf16" if mode == "bf16" else "int8-dynamic"
            return (torch.bfloat16, base) if mode == "bf16" else (torch.float32, "int8")
        name = "fp32" if s.dtype == "auto" else s.dtype
        self.dtype_name = name
        return names[name], base

    def _half(self):
        import torch

        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.dtype_name)

    # -- voices --------------------------------------------------------------------------------

    def voices(self) -> list[Voice]:
        return list(self._voices.values())

    def _settings_key(self) -> dict:
        return {"v": 1, "model": self._fingerprint, "device": str(self.device)}

    def add_voice(self, voice: Voice) -> Voice:
        """Prepare (or re-prepare after an edit) a `[[voices]]` entry; cached by content hash."""
        import ishowttsd.engines.indextts.voices as V

        if not self.loaded:
            raise EngineError("indextts: not loaded")
        if not voice.reference_audio:
            raise EngineError(f"voice {voice.id!r}: an indextts voice needs reference_audio (3-10 s of the voice to clone)")
        opts = V.parse_options(voice.id, voice.options)
        if opts.needs_qwen:
            self._load_qwen()
        speaker = self.speaker(Path(voice.reference_audio), voice.id)
        emovec = None
        if opts.emo_audio:
            emovec = self._emotion_audio(speaker, self._resolve(opts.emo_audio), opts.emo_alpha, voice.id)
        elif opts.emo_vector:
            emovec = V.vector_emovec(self.models, speaker, V.scale_vector(opts.emo_vector, opts.emo_alpha))
        elif opts.emo_text:
            emovec = V.vector_emovec(self.models, speaker, V.scale_vector(self.text_emotion(opts.emo_text), opts.emo_alpha))
        elif not opts.emo_from_text:
            emovec = speaker.self_emovec
        with self._lock:
            self._prepared[voice.id] = {"speaker": speaker, "options": opts,
                                        "conds": None if emovec is None else self._conds(speaker, emovec)}  # fmt: skip
            emo = next((k for k in ("emo_audio", "emo_vector", "emo_text", "emo_from_text") if getattr(opts, k)), None)
            voice.description = voice.description or (
                f"cloned from {Path(voice.reference_audio).name} ({speaker.seconds:.1f} s)" + (f", emotion from {emo}" if emo else "")
            )
            self._voices[voice.id] = voice
        return voice

    def speaker(self, path: Path, what: str = "voice"):
        import ishowttsd.engines.indextts.voices as V

        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise EngineError(f"voice {what!r}: reference_audio {path} does not exist") from None
        except OSError as e:
            raise EngineError(f"voice {what!r}: cannot read reference_audio {path}: {e.strerror}") from None
        key = self._cache.key(data, self._settings_key())
        hit = self._cache.get(key, V.Speaker.FIELDS)
        if hit is not None:
            return V.Speaker(key, *(hit[f] for f in V.Speaker.FIELDS), hit["seconds"])
        audio = V.read_audio(data, path, f"voice {what!r}: reference_audio", V.REF_SR)
        audio16 = V.read_audio(data, path, f"voice {what!r}: reference_audio", 16000)
        with self._lock:
            sp = V.compute_speaker(self.models, audio, audio16, key)
        self._cache.put(key, {**{f: getattr(sp, f) for f in V.Speaker.FIELDS}, "seconds": sp.seconds})
        return sp

    def _emotion_audio(self, speaker, path: Path, alpha: float, what: str):
        import ishowttsd.engines.indextts.voices as V

        try:
            data = path.read_bytes()
        except OSError:
            raise EngineError(f"voice {what!r}: options.emo_audio {path} does not exist or cannot be read") from None
        key = self._cache.key(b"emo", data, self._settings_key())
        hit = self._cache.get(key, ("emovec",))
        if hit is None:
            audio = V.read_audio(data, path, f"voice {what!r}: options.emo_audio", 16000)
            with self._lock:
                hit = self._cache.put(key, {"emovec": V.emotion_audio_vec(self.models, audio)})
        return speaker.base_emovec + alpha * (hit["emovec"] - speaker.base_emovec)

    def _load_qwen(self) -> None:
        import ishowttsd.engines.indextts.files as files

        if self.qwen is None:
            folder = self._resolve(self.settings.qwen_emotion) if self.settings.qwen_emotion else (
                self.paths.model_dir / str(self.models.cfg.get("qwen_emo_path", "qwen0.6bemo4-merge")).strip())  # fmt: skip
            self.qwen = files.load_qwen_emotion(folder)

    def text_emotion(self, text: str, persist: bool = True) -> list[float]:
        """The Qwen emotion model's 8 weights for a text: a voice's description is cached on disk
        too, a chat message's (emo_from_text) only in a bounded memory LRU."""
        import torch

        import ishowttsd.engines.indextts.voices as V

        self._load_qwen()
        if not persist:
            vec = self._chat_emotions.pop(text, None)
            if vec is None:
                with self._lock:
                    vec = V.qwen_emotion(self.qwen, text)
            self._chat_emotions[text] = vec
            while len(self._chat_emotions) > 512:
                self._chat_emotions.pop(next(iter(self._chat_emotions)))
            return vec
        key = self._cache.key(b"qwen", text, self._settings_key(), str(self.qwen.model_dir))
        hit = self._cache.get(key, ("vec",))
        if hit is None:
            with self._lock:
                vec = V.qwen_emotion(self.qwen, text)
            hit = self._cache.put(key, {"vec": torch.tensor(vec)})
        return [float(x) for x in hit["vec"]]

    def _conds(self, speaker, emovec):
        """The GPT's conditioning prefix: speaker latent + emotion, then the two speed embeddings."""
        import torch

        gpt = self.models.gpt
        with torch.inference_mode():
            z = torch.zeros(1, dtype=torch.long, device=self.device)
            return torch.cat([speaker.cond_latent + emovec[:, None], gpt.speed_emb(z + 1)[:, None], gpt.speed_emb(z)[:, None]], 1)

    # -- synthesis -----------------------------------------------------------------------------

    def _prepared_for(self, voice: Voice) -> dict:
        p = self._prepared.get(voice.id)
        if p is None:
            self.add_voice(voice)
            p = self._prepared[voice.id]
        return p

    def plan(self, text: str) -> list[list[str]]:
        s = self.settings
        return self.frontend.segments(text, s.max_text_tokens_per_segment, s.stream_first_sentence)

    def synthesize(self, text: str, voice: Voice, cancel: threading.Event) -> Iterator[AudioChunk]:
        """Stream `text` segment by segment, 200 ms of silence between them (as upstream)."""
        import torch

        import ishowttsd.engines.indextts.voices as V

        if not self.loaded:
            raise EngineError("indextts: not loaded")
        p = self._prepared_for(voice)
        conds = p["conds"]
        if conds is None:  # emo_from_text: this utterance's own emotion
            vec = V.scale_vector(self.text_emotion(text, persist=False), p["options"].emo_alpha)
            conds = self._conds(p["speaker"], V.vector_emovec(self.models, p["speaker"], vec))
        segments = self.plan(text)
        gen = self._generator(torch)
        self.last_codes, self.last_mel = [], []
        self.timings = {"gpt_s": 0.0, "s2mel_s": 0.0, "vocoder_s": 0.0}
        silence = np.zeros(int(SAMPLE_RATE * self.settings.interval_silence_ms / 1000), np.float32)
        spoken = False
        for seg in segments:
            wav = self._segment(seg, p["speaker"], conds, gen, cancel)
            if wav is None:
                return
            if not len(wav):
                continue
            if spoken and len(silence):
                yield AudioChunk(silence, SAMPLE_RATE)
            spoken = True
            yield AudioChunk(wav, SAMPLE_RATE)

    def _generator(self, torch):
        g = torch.Generator(device=self.device)
        g.manual_seed(self.settings.seed if self.settings.seed is not None else torch.seed())
        return g

    def _segment(self, pieces: list[str], speaker, conds, gen, cancel) -> np.ndarray | None:
        import torch

        import ishowttsd.engines.indextts.gpt_fast as gpt_fast
        import ishowttsd.engines.indextts.s2mel as s2mel
        import ishowttsd.engines.indextts.vocoder as vocoder

        s = self.settings
        ids = self.frontend.ids(pieces)
        with self._lock, torch.inference_mode():
            t0 = time.perf_counter()
            if s.num_beams > 1:
                out = self._codes_upstream(ids, conds, gen)
            else:
                sampling = gpt_fast.Sampling(s.temperature, s.top_k, s.top_p, s.repetition_penalty)
                prefix = self._gpt.prefix(conds, ids)
                codes = self._gpt.generate(prefix, self.max_codes(), sampling, gen, cancel)
                out = None if codes is None else (codes, self._gpt.latent(codes) if codes else None)
            if out is None:
                return None
            codes, latent = out
            self.last_codes.append(codes)
            t1 = time.perf_counter()
            self.timings["gpt_s"] += t1 - t0
            if not codes:
                return np.zeros(0, np.float32)
            mu = s2mel.condition(self.models, latent, codes, speaker.prompt_condition)
            mel = s2mel.solve(self._s2mel, mu, speaker.ref_mel, speaker.style, s.diffusion_steps, s.cfg_rate, gen, cancel)
            if mel is None:
                return None
            mel = mel[:, :, speaker.ref_mel.shape[-1] :]
            self.last_mel.append(mel[0].clone())
            t2 = time.perf_counter()
            self.timings["s2mel_s"] += t2 - t1
            wav = vocoder.vocode(self.models.bigvgan, mel, self.device, self._half())
            self.timings["vocoder_s"] += time.perf_counter() - t2
        return wav

    def max_codes(self) -> int:
        """Codes per segment: the setting, within what the GPT has positions for."""
        return min(self.settings.max_mel_tokens, self.models.gpt.max_mel_tokens)

    def _codes_upstream(self, ids: list[int], conds, gen):
        """num_beams > 1: upstream's beam sampling through transformers' generate (global RNG,
        seeded from our generator), and its full latent forward."""
        import torch

        s = self.settings
        gpt = self.models.gpt
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen, device=gen.device)))
        text = torch.tensor([ids], dtype=torch.int32, device=self.device)
        n = conds.shape[1] - 2
        latent_in, emovec = conds[:, :n], torch.zeros(1, conds.shape[-1], device=self.device)
        fake_ids, embeds, mask = gpt.prepare_gpt_inputs(conds, text)
        gpt.inference_model.store_mel_emb(embeds)
        out = gpt.inference_model.generate(
            fake_ids, bos_token_id=gpt.start_mel_token, pad_token_id=gpt.stop_mel_token, eos_token_id=gpt.stop_mel_token,
            attention_mask=mask, max_length=fake_ids.shape[1] + self.max_codes(), do_sample=True, top_p=s.top_p,
            top_k=s.top_k, temperature=s.temperature, num_return_sequences=1, length_penalty=0.0, num_beams=s.num_beams,
            repetition_penalty=s.repetition_penalty,
        )  # fmt: skip
        codes = out[0, fake_ids.shape[1] :].tolist()
        if gpt.stop_mel_token in codes:
            codes = codes[: codes.index(gpt.stop_mel_token)]
        if not codes:
            return [], None
        c = torch.tensor([codes], device=self.device)
        latent = gpt(latent_in, text, torch.tensor([len(ids)], device=self.device), c, torch.tensor([len(codes)], device=self.device),
                     None, emo_vec=emovec, use_speed=torch.zeros(1, dtype=torch.long, device=self.device))  # fmt: skip
        return codes, latent

    # -- warm-up -------------------------------------------------------------------------------

    def warmup(self, progress: Progress) -> None:
        """Run the whole path once on a synthetic reference; the front end's caches fill too."""
        import torch

        import ishowttsd.engines.indextts.gpt_fast as gpt_fast
        import ishowttsd.engines.indextts.s2mel as s2mel
        import ishowttsd.engines.indextts.vocoder as vocoder

        s = self.settings
        progress("warming up", 0.0)
        g = torch.Generator().manual_seed(1)
        t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
        audio = (0.1 * np.sin(2 * np.pi * 150 * t) * (1 + 0.01 * torch.randn(len(t), generator=g).numpy())).astype(np.float32)
        import ishowttsd.engines.indextts.voices as V

        audio16 = audio[np.arange(0, len(audio), SAMPLE_RATE / 16000).astype(int)]
        with self._lock, torch.inference_mode():
            sp = V.compute_speaker(self.models, audio, audio16, "warmup")
            conds = self._conds(sp, sp.self_emovec)
            pieces = self.plan(s.warmup_text)[0]
            gen = self._generator(torch)
            prefix = self._gpt.prefix(conds, self.frontend.ids(pieces))
            codes = self._gpt.generate(prefix, min(16, s.max_mel_tokens), gpt_fast.Sampling(), gen) or [0]
            progress("warming up", 0.5)
            mu = s2mel.condition(self.models, self._gpt.latent(codes), codes, sp.prompt_condition)
            mel = s2mel.solve(self._s2mel, mu, sp.ref_mel, sp.style, min(2, s.diffusion_steps), s.cfg_rate, gen)
            vocoder.vocode(self.models.bigvgan, mel[:, :, sp.ref_mel.shape[-1] :], self.device, self._half())
        self.warm = True
        progress("warmed up", 1.0)

    def info(self) -> dict[str, Any]:
        d = super().info()
        d.update({
            "device": str(self.device) if self.device else None, "dtype": self.dtype_name, "kernels": self.kernel_kind,
            "diffusion_steps": self.settings.diffusion_steps, "num_beams": self.settings.num_beams,
            "normalize": self.settings.normalize, "emotion_model": self.qwen is not None,
            "bigvgan_cuda_kernel": bool(getattr(self.models.bigvgan, "cuda_kernel", False)) if self.models else False,
            "reference_cache": dict(self._cache.stats) if self._cache else {"memory": 0, "disk": 0, "miss": 0},
        })  # fmt: skip
        return d
