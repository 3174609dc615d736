"""`compile = true`: torch.compile of the F5 step, with length buckets, on the CPU (inductor).

Warm-up compiles every bucket; after it, utterances of any length within the buckets and
batches of any size run without a single recompile (dynamo is told to raise on one), and
the compiled path says the same as the eager one.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("f5_tts")

import f5_tiny  # noqa: E402

from ishowttsd.engines.base import EngineContext, Voice  # noqa: E402
from ishowttsd.engines.f5 import F5Engine, F5Settings  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="inductor needs g++ (make sysdeps installs it)")


class _Cfg:
    def resolve(self, p: str) -> Path:
        return Path(p)


def make(tiny, state: Path, **kw) -> F5Engine:
    table = dict(model="tiny", arch=f5_tiny.TINY_ARCH, checkpoint=str(tiny["safetensors"]), vocab=str(tiny["vocab"]),
                 vocoder=str(tiny["vocos"]), device="cpu", **kw)  # fmt: skip
    e = F5Engine(F5Settings(**table), EngineContext(config=_Cfg(), state_dir=state))
    e.load(lambda *_: None)
    e.add_voice(Voice(id="me", engine="f5", reference_audio=str(tiny["ref"]), reference_text=f5_tiny.REF_TEXT))
    return e


def speak(e: F5Engine, text: str) -> np.ndarray:
    return np.concatenate([c.samples for c in e.synthesize(text, e.voices()[0], threading.Event())])


def rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def test_compiled_engine_warms_every_bucket_and_never_recompiles(tmp_path):
    tiny = f5_tiny.build(tmp_path / "tiny")
    eager = make(tiny, tmp_path / "s1")
    texts = ["Hello there!", "Hi. How is it going today, friends?", "Good game, well played!"]
    durations = [eager._duration(_job(eager, t))[1] for t in texts]
    exact = durations[2]  # one utterance fills its bucket exactly: unpadded, yet it must not recompile
    buckets = [256, exact, 384]
    compiled = make(tiny, tmp_path / "s2", compile=True, buckets=buckets, max_batch=8)
    assert compiled.info()["compile"] is True and compiled.info()["kernels"] == "torch"
    stages = []
    compiled.warmup(lambda stage, frac: stages.append((stage, frac)))
    assert stages[-1] == ("compiling and warming up", 1.0)
    assert durations[0] <= 256 < exact < durations[1] <= 384, durations  # every bucket is used below
    torch._dynamo.config.error_on_recompile = True
    try:
        for t in texts:  # one utterance at a time, in both buckets
            a, b = speak(eager, t), speak(compiled, t)
            assert len(a) == len(b) and rel(b, a) < 1e-4
        for k in (2, 3):  # batches of other sizes than the warm-up's
            want = eager.synthesize_batch(texts[:k], [eager.voices()[0]] * k)
            got = compiled.synthesize_batch(texts[:k], [compiled.voices()[0]] * k)
            assert [len(w) for w in got] == [len(w) for w in want]
            assert max(rel(g, w) for g, w in zip(got, want)) < 1e-4
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()


def _job(e: F5Engine, text: str):
    from ishowttsd.engines.f5 import _Job

    return _Job(0, 0, text, e._refs["me"], 1.0)
