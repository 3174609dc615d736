"""The F5-TTS engine, in files named for their jobs:

- `engine.py`: `F5Engine` and its `[engine.f5]` settings: loading, voices, chunked streaming,
  batches, warm-up;
- `weights.py`: the architectures, vocab, checkpoint and Vocos loading (and random weights in
  the release formats for the benchmark and the tests);
- `reference.py`: reference-audio preparation and the voice cache;
- `text.py`: the reference transcript as upstream feeds it, and sentence chunking;
- `fast.py`: our DiT hot path and the sampler.

This package is the public surface: import from `ishowttsd.engines.f5`. Importing it is light:
torch and f5-tts load in `F5Engine.load()`, and the names of `fast` (which imports torch) are
loaded on first use.
"""

from __future__ import annotations

from typing import Any

from ishowttsd.engines.f5.engine import F5Engine, F5Settings, _Job, crossfade, crossfade_join  # noqa: F401  (_Job: tests)
from ishowttsd.engines.f5.reference import Reference, ReferenceCache, clean_reference, read_audio
from ishowttsd.engines.f5.text import normalize_ref_text, split_chunks
from ishowttsd.engines.f5.weights import (
    ARCHS, HOP, N_FFT, N_MELS, SAMPLE_RATE, build_model, default_vocab, default_vocab_path, import_f5, load_checkpoint,
    load_vocab, load_vocos, randomize, read_checkpoint, release_state_dict, save_random_vocos, vocos_config,
)  # fmt: skip
from ishowttsd.hardware import cpu_flags, cpu_has_amx, cpu_has_bf16, cpu_has_vnni

_default_vocab = default_vocab  # its name before the package split

_FAST = ("FastDiT", "Linear", "bucket", "onednn_available", "rel_error", "sample", "time_grid")

__all__ = [
    "ARCHS", "HOP", "N_FFT", "N_MELS", "SAMPLE_RATE", "F5Engine", "F5Settings", "Reference", "ReferenceCache",
    "build_model", "clean_reference", "cpu_flags", "cpu_has_amx", "cpu_has_bf16", "cpu_has_vnni", "crossfade",
    "crossfade_join", "default_vocab", "default_vocab_path", "import_f5", "load_checkpoint", "load_vocab", "load_vocos",
    "normalize_ref_text", "randomize", "read_audio", "read_checkpoint", "release_state_dict", "save_random_vocos",
    "split_chunks", "vocos_config", *_FAST,
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _FAST:  # torch loads here, on first use, not when the daemon imports the engine
        from ishowttsd.engines.f5 import fast

        return getattr(fast, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
