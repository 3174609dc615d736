"""A voice's conditioning, computed once, kept in memory and on disk; its emotion settings.

Upstream's `infer()` keeps the conditioning of the last reference it saw (one, in memory) and
recomputes per call the GPT's conditioning encoders (the speaker's perceiver latent and two
emotion encodings). Here each voice's whole conditioning, in the form the hot path reads it,
is computed once: w2v-bert features, semantic codes and s2mel's prompt condition, CAM++ style,
the reference mel, the GPT's speaker latent and emotion vector. It is cached in memory and
under `<state_dir>/indextts-voices/`, keyed by a hash of the recording, the settings that shape
it and the weights it came from; an edited recording or another model is prepared again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ishowttsd.engines.base import EngineError

EMOTIONS = ("happy", "angry", "sad", "afraid", "disgusted", "melancholic", "surprised", "calm")
_CACHE_VERSION = 1
REF_SR = 22_050
REF_MAX_S = 15.0  # upstream cuts every prompt at 15 s


class VoiceOptions(BaseModel):
    """The `options` of an `engine = "indextts"` voice: at most one emotion source."""

    model_config = ConfigDict(extra="forbid")

    emo_audio: str | None = Field(default=None, description="a recording whose emotion the voice takes")
    emo_alpha: float = Field(default=1.0, ge=0.0, le=1.0, description="how much of the emotion (audio or vector)")
    emo_vector: list[float] | None = Field(default=None, description="8 weights: " + ", ".join(EMOTIONS))
    emo_text: str | None = Field(default=None, description="a description of the emotion, read by the Qwen emotion model")
    emo_from_text: bool = Field(default=False, description="each utterance's own text sets its emotion (Qwen model)")

    @field_validator("emo_vector")
    @classmethod
    def _vector(cls, v):
        if v is None:
            return v
        if len(v) != 8:
            raise ValueError(f"needs 8 values ({', '.join(EMOTIONS)}), got {len(v)}")
        if any(x < 0 or x > 1 for x in v):
            raise ValueError("each value is between 0 and 1")
        if sum(v) > 1.0 + 1e-6:
            raise ValueError(f"the values add up to {sum(v):.2f}; keep the sum at most 1 (upstream's web UI keeps it under 0.8)")
        return v

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("emo_audio", "emo_vector", "emo_text") if getattr(self, k)] + (["emo_from_text"] if self.emo_from_text else [])
        if len(given) > 1:
            raise ValueError(f"choose one emotion source, not {' and '.join(given)}")
        return self

    @property
    def needs_qwen(self) -> bool:
        return bool(self.emo_text) or self.emo_from_text


def parse_options(voice_id: str, options: dict[str, Any]) -> VoiceOptions:
    try:
        return VoiceOptions(**options)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "options"
        raise EngineError(
            f"voice {voice_id!r}: options.{where}: {err['msg']} (indextts voice options: emo_audio + emo_alpha, "
            f"emo_vector = [8 weights: {', '.join(EMOTIONS)}], emo_text, or emo_from_text = true)"
        ) from None


@dataclass
class Speaker:
    """A reference recording's conditioning, as the hot path reads it."""

    key: str
    cond_latent: Any  # (1, 32, dim) the GPT's speaker latent
    base_emovec: Any  # (1, dim) the GPT's emotion vector of the speaker features (the base an emo_audio mixes from)
    self_emovec: Any  # (1, dim) the same of the recording read at 16 kHz: upstream's emotion when none is given
    style: Any  # (1, 192) CAM++ style
    prompt_condition: Any  # (1, P, content) s2mel condition of the reference
    ref_mel: Any  # (1, 80, P)
    seconds: float

    FIELDS = ("cond_latent", "base_emovec", "self_emovec", "style", "prompt_condition", "ref_mel")


def read_audio(data: bytes, path: Path, what: str, sr: int) -> np.ndarray:
    """Mono float32 at `sr`, cut at 15 s, read and resampled as upstream does (librosa)."""
    import librosa

    from ishowttsd.engines.indextts.files import quiet

    try:
        with quiet():
            audio, _ = librosa.load(io.BytesIO(data), sr=sr)
    except Exception as e:
        raise EngineError(f"{what}: {path} is not readable audio ({str(e)[:120]}); expected a WAV/FLAC/OGG file") from None
    audio = audio[: int(REF_MAX_S * sr)]
    if len(audio) < sr // 2:
        raise EngineError(f"{what}: {path} is shorter than 0.5 s; record 3-10 s of clear speech")
    if not np.any(np.abs(audio) > 1e-4):
        raise EngineError(f"{what}: {path} is silent; record 3-10 s of clear speech")
    return audio


class ConditioningCache:
    """Conditioning tensors in memory and on disk (npz), by content key."""

    def __init__(self, folder: Path, device, log) -> None:
        self.folder, self.device, self.log = folder, device, log
        self.memory: dict[str, Any] = {}
        self.stats = {"memory": 0, "disk": 0, "miss": 0}

    @staticmethod
    def key(*parts: bytes | str | dict) -> str:
        h = hashlib.sha256()
        for p in parts:
            h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True).encode() if isinstance(p, dict) else p.encode())
            h.update(b"\0")
        return h.hexdigest()[:32]

    def get(self, key: str, fields: tuple[str, ...]) -> dict | None:
        import torch

        if key in self.memory:
            self.stats["memory"] += 1
            return self.memory[key]
        file = self.folder / f"{key}.npz"
        if file.exists():
            try:
                with np.load(file) as z:
                    got = {f: torch.from_numpy(z[f]).to(self.device) for f in fields}
                    got["seconds"] = float(z["seconds"]) if "seconds" in z else 0.0
                self.stats["disk"] += 1
                self.memory[key] = got
                return got
            except Exception as e:  # a damaged cache file is rebuilt, never fatal
                self.log.warning("voice cache %s unreadable (%s); rebuilding", file, e)
        return None

    def put(self, key: str, values: dict) -> dict:
        self.stats["miss"] += 1
        self.memory[key] = values
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f"{key}.tmp.npz"
            np.savez(tmp, **{k: (v.float().cpu().numpy() if hasattr(v, "cpu") else np.asarray(v)) for k, v in values.items()})
            os.replace(tmp, self.folder / f"{key}.npz")
        except OSError as e:
            self.log.warning("cannot write the voice cache %s: %s", self.folder, e)
        return values


def semantic_features(models, audio16) -> Any:
    """w2v-bert hidden state 17, normalised with the model's statistics (upstream's get_emb)."""
    import torch

    inputs = models.feature_extractor(audio16, sampling_rate=16000, return_tensors="pt")
    dev = models.semantic_mean.device
    with torch.inference_mode():
        out = models.semantic_model(input_features=inputs["input_features"].to(dev),
                                    attention_mask=inputs["attention_mask"].to(dev), output_hidden_states=True)  # fmt: skip
    return (out.hidden_states[17] - models.semantic_mean) / models.semantic_std


def compute_speaker(models, audio22: np.ndarray, audio16: np.ndarray, key: str) -> Speaker:
    """Everything upstream's `_get_speaker_conditioning` and its GPT conditioning calls compute.
    audio22: the recording read at 22.05 kHz; audio16: read at 16 kHz (upstream's emotion side
    reads it again that way, so without an emotion setting the emotion comes from that read)."""
    import torch
    import torchaudio

    from ishowttsd.engines.indextts.files import quiet

    with quiet():
        from indextts.s2mel.modules.audio import mel_spectrogram

    cfg = models.cfg.s2mel["preprocess_params"]
    sp = cfg["spect_params"]
    dev = models.semantic_mean.device
    with torch.inference_mode():
        a22 = torch.from_numpy(audio22)[None]
        a16 = torchaudio.transforms.Resample(REF_SR, 16000)(a22)
        feat = semantic_features(models, a16)
        _, S_ref = models.semantic_codec.quantize(feat)
        ref_mel = mel_spectrogram(a22.to(dev).float(), n_fft=sp["n_fft"], num_mels=sp["n_mels"], sampling_rate=cfg["sr"],
                                  hop_size=sp["hop_length"], win_size=sp["win_length"], fmin=sp.get("fmin", 0),
                                  fmax=None if sp.get("fmax", "None") == "None" else 8000, center=False)  # fmt: skip
        fb = torchaudio.compliance.kaldi.fbank(a16.to(dev), num_mel_bins=80, dither=0, sample_frequency=16000)
        style = models.campplus((fb - fb.mean(dim=0, keepdim=True)).unsqueeze(0))
        prompt = models.s2mel.models["length_regulator"](S_ref, ylens=torch.LongTensor([ref_mel.size(2)]).to(dev),
                                                         n_quantizers=3, f0=None)[0]  # fmt: skip
        lengths = torch.tensor([feat.shape[-1]], device=dev)  # upstream passes the feature width as the length
        cond_latent = models.gpt.get_conditioning(feat.transpose(1, 2), lengths)
        base = models.gpt.get_emovec(feat, lengths)
    return Speaker(key, cond_latent, base, emotion_audio_vec(models, audio16), style, prompt, ref_mel, len(audio22) / REF_SR)


def emotion_audio_vec(models, audio16: np.ndarray):
    """The GPT's emotion vector of an emotion recording (upstream's merge_emovec, emotion side)."""
    import torch

    with torch.inference_mode():
        feat = semantic_features(models, torch.from_numpy(audio16)[None])
        return models.gpt.get_emovec(feat, torch.tensor([feat.shape[-1]], device=feat.device))


def vector_emovec(models, speaker: Speaker, weights: list[float]):
    """An 8-weight emotion vector mixed as upstream does: each emotion's entry nearest the
    speaker's style (cosine), weighted, plus (1 - sum) of the speaker's own emotion."""
    import torch

    with torch.inference_mode():
        w = torch.tensor(weights, device=speaker.style.device, dtype=torch.float32)
        rows = []
        for spk, emo in zip(models.spk_matrix, models.emo_matrix):
            idx = torch.argmax(torch.nn.functional.cosine_similarity(speaker.style.float(), spk.float(), dim=1))
            rows.append(emo[idx][None])
        mat = (w[:, None] * torch.cat(rows)).sum(0, keepdim=True)
        return mat + (1 - w.sum()) * speaker.self_emovec


def scale_vector(weights: list[float], alpha: float) -> list[float]:
    """emo_alpha scales a vector as upstream does (truncated to 4 decimals)."""
    a = max(0.0, min(1.0, alpha))
    return list(weights) if a == 1.0 else [int(x * a * 10000) / 10000 for x in weights]


_PAIR = re.compile(r'([^\s":.,]+?)"?\s*:\s*([\d.]+)')
_MELANCHOLIC = {"低落", "melancholy", "melancholic", "depression", "depressed", "gloomy", "nostalgia"}


def qwen_emotion(qwen, text: str, max_new_tokens: int = 96) -> list[float]:
    """Upstream's QwenEmotion.inference, bounded: greedy, at most `max_new_tokens` (its JSON of
    eight scores is about 60; upstream allows 32768, which an unlucky answer would all use)."""
    import torch

    messages = [{"role": "system", "content": qwen.prompt}, {"role": "user", "content": text}]
    prompt = qwen.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    inputs = qwen.tokenizer([prompt], return_tensors="pt").to(qwen.model.device)
    with torch.inference_mode():
        out = qwen.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=qwen.tokenizer.eos_token_id)  # fmt: skip
    ids = out[0][inputs.input_ids.shape[1] :].tolist()
    if 151668 in ids:  # </think>
        ids = ids[len(ids) - ids[::-1].index(151668) :]
    answer = qwen.tokenizer.decode(ids, skip_special_tokens=True)
    return [float(x) for x in parse_emotion(qwen, answer, text)]


def parse_emotion(qwen, answer: str, text: str) -> list[float]:
    """The model's answer (JSON, or loose "key: value" pairs) as upstream reads it."""
    try:
        content = json.loads(answer)
        if not isinstance(content, dict):
            raise ValueError
    except ValueError:
        content = {m.group(1): float(m.group(2)) for m in _PAIR.finditer(answer)}
    if any(w in text.lower() for w in _MELANCHOLIC):
        content["悲伤"], content["低落"] = content.get("低落", 0.0), content.get("悲伤", 0.0)
    return list(qwen.convert(content).values())
