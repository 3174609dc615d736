"""espeak-ng through the `espeakng-loader` wheel: the embedded default engine.

The wheel carries libespeak-ng and its voice data, so this engine needs no system package,
no weights and no GPU. We call the C API with ctypes in synchronous mode; the synth callback
hands audio over chunk by chunk, so sinks start playing before the sentence is finished.
"""

from __future__ import annotations

import ctypes
import queue
import re
import threading
from typing import Iterator

import numpy as np
from pydantic import Field

from ishowttsd.engines.base import Engine, EngineError, EngineSettings, Progress, Voice
from ishowttsd.messages import AudioChunk

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE = 1  # espeak_PARAMETER espeakRATE
_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Han, kana, Hangul and CJK punctuation: spoken by the Mandarin voice in "auto"
_CJK = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")

_BUILTIN = [
    Voice(id="auto", engine="espeak", language="auto", description="Mandarin for Chinese text, English otherwise"),
    Voice(id="zh", engine="espeak", language="cmn", description="Mandarin Chinese"),
    Voice(id="en", engine="espeak", language="en-us", description="English (US)"),
]


class EspeakSettings(EngineSettings):
    rate: int = Field(default=175, ge=80, le=450, description="words per minute")
    chunk_ms: int = Field(default=200, ge=20, le=2000, description="audio chunk length")


class EspeakEngine(Engine):
    name = "espeak"
    Settings = EspeakSettings

    # libespeak-ng has global state: one synthesis at a time in this process
    _lib_lock = threading.Lock()

    def __init__(self, settings, ctx) -> None:
        super().__init__(settings, ctx)
        self._lib = None
        self._voices = {v.id: v for v in _BUILTIN}
        self._cb = None
        self._sink: queue.Queue | None = None
        self._cancel: threading.Event | None = None

    def load(self, progress: Progress) -> None:
        progress("loading libespeak-ng", None)
        try:
            import espeakng_loader
        except ImportError:
            raise EngineError("espeak: the espeakng-loader package is missing; pip install espeakng-loader") from None
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data = espeakng_loader.get_data_path().encode()
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, self.settings.chunk_ms, data, 0)
        if sr <= 0:
            raise EngineError(f"espeak: espeak_Initialize failed ({sr}); is the espeak-ng data at {data.decode()} intact?")
        self._cb = _SYNTH_CB(self._on_audio)
        lib.espeak_SetSynthCallback(self._cb)
        for lang in ("cmn", "en-us"):
            if lib.espeak_SetVoiceByName(lang.encode()) != 0:
                raise EngineError(f"espeak: voice {lang!r} is missing from the espeak-ng data")
        self._lib = lib
        self.sample_rate = sr
        self.loaded = True
        progress("espeak-ng ready", 1.0)

    def voices(self) -> list[Voice]:
        return list(self._voices.values())

    def add_voice(self, voice: Voice) -> Voice:
        lang = voice.options.get("espeak_voice") or voice.language
        if not lang:
            raise EngineError(
                f"voice {voice.id!r}: an espeak voice needs `language` (e.g. \"cmn\", \"en-gb\", \"auto\")"
            )
        if lang != "auto" and self._lib is not None:
            with self._lib_lock:
                if self._lib.espeak_SetVoiceByName(str(lang).encode()) != 0:
                    raise EngineError(f"voice {voice.id!r}: espeak-ng has no voice {lang!r}")
        voice.language = str(lang)
        self._voices[voice.id] = voice
        return voice

    def _on_audio(self, wav, n, _events) -> int:
        if n > 0 and wav:
            samples = np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768.0
            self._sink.put(samples)
        return 1 if self._cancel is not None and self._cancel.is_set() else 0

    def synthesize(self, text: str, voice: Voice, cancel: threading.Event) -> Iterator[AudioChunk]:
        if self._lib is None:
            raise EngineError("espeak: not loaded")
        segments = split_by_script(text) if voice.language == "auto" else [(voice.language, text)]
        rate = int(self.settings.rate * voice.speed)
        out: queue.Queue = queue.Queue()
        done = object()

        def worker() -> None:
            try:
                with self._lib_lock:
                    self._sink, self._cancel = out, cancel
                    self._lib.espeak_SetParameter(_RATE, rate, 0)
                    for lang, seg in segments:
                        if cancel.is_set():
                            break
                        if self._lib.espeak_SetVoiceByName(lang.encode()) != 0:
                            raise EngineError(f"espeak-ng has no voice {lang!r}")
                        data = seg.encode("utf-8")
                        rc = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                        if rc not in (0, 1):  # 1 = EE_BUFFER_FULL after a cancel
                            raise EngineError(f"espeak_Synth failed with code {rc}")
            except BaseException as e:  # handed to the consumer, which raises it
                out.put(e)
            finally:
                self._sink = self._cancel = None
                out.put(done)

        t = threading.Thread(target=worker, name="espeak-synth", daemon=True)
        t.start()
        while True:
            item = out.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            if not cancel.is_set():
                yield AudioChunk(item, self.sample_rate)
        t.join()


def split_by_script(text: str) -> list[tuple[str, str]]:
    """Split text into (espeak voice, segment) runs: CJK to Mandarin, Latin script to English.

    Digits, spaces and punctuation stay with the run they are in, so "送了10个" stays whole.
    """
    runs: list[tuple[str, str]] = []
    current: str | None = None
    buf: list[str] = []
    for ch in text:
        lang = "cmn" if _CJK.match(ch) else "en-us" if _LATIN.match(ch) else None
        if lang is not None and current is not None and lang != current:
            runs.append((current, "".join(buf)))
            buf = []
        if lang is not None:
            current = lang
        buf.append(ch)
    if buf:
        runs.append((current or "en-us", "".join(buf)))
    return [(lang, seg) for lang, seg in runs if seg.strip()]
