import threading

import numpy as np
import pytest

from ishowttsd.config import Config
from ishowttsd.engines.base import EngineContext, EngineError, Voice
from ishowttsd.engines.espeak import EspeakEngine, EspeakSettings, split_by_script


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    e = EspeakEngine(EspeakSettings(), EngineContext(Config(), tmp_path_factory.mktemp("state")))
    e.load(lambda stage, frac: None)
    return e


def voice(engine, vid):
    return next(v for v in engine.voices() if v.id == vid)


@pytest.mark.parametrize(
    "vid,text",
    [("zh", "感谢老板送的火箭，今天的直播真精彩！"), ("en", "Thanks for the five hundred bits, you are awesome."),
     ("auto", "PixelFox说：hello from Canada，欢迎欢迎")],
)  # fmt: skip
def test_speaks_in_streamed_chunks(engine, vid, text):
    chunks = list(engine.synthesize(text, voice(engine, vid), threading.Event()))
    assert len(chunks) > 3, "audio should arrive in several chunks, not all at once"
    audio = np.concatenate([c.samples for c in chunks])
    seconds = len(audio) / engine.sample_rate
    assert 1.0 < seconds < 12.0
    assert np.abs(audio).max() > 0.1  # not silent
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0


def test_mandarin_and_english_sound_different(engine):
    zh = np.concatenate([c.samples for c in engine.synthesize("你好", voice(engine, "zh"), threading.Event())])
    en = np.concatenate([c.samples for c in engine.synthesize("你好", voice(engine, "en"), threading.Event())])
    assert len(zh) != len(en) or not np.allclose(zh, en)


def test_cancel_stops_early(engine):
    cancel = threading.Event()
    long_text = "This is a long sentence that keeps going. " * 20
    got = []
    for chunk in engine.synthesize(long_text, voice(engine, "en"), cancel):
        got.append(chunk)
        if len(got) == 2:
            cancel.set()
    full = sum(c.duration for c in engine.synthesize(long_text, voice(engine, "en"), threading.Event()))
    assert sum(c.duration for c in got) < full / 4


def test_rate_setting_changes_duration(tmp_path):
    def seconds(rate):
        e = EspeakEngine(EspeakSettings(rate=rate), EngineContext(Config(), tmp_path))
        e.load(lambda *a: None)
        return sum(c.duration for c in e.synthesize("one two three four five six seven", e.voices()[2], threading.Event()))

    assert seconds(120) > seconds(300) * 1.5


def test_configured_voice(engine):
    v = engine.add_voice(Voice(id="deutsch", engine="espeak", language="de"))
    assert v in engine.voices()
    with pytest.raises(EngineError, match="no voice"):
        engine.add_voice(Voice(id="x", engine="espeak", language="zz-nonexistent"))
    with pytest.raises(EngineError, match="needs `language`"):
        engine.add_voice(Voice(id="y", engine="espeak"))


def test_split_by_script():
    assert split_by_script("PixelFox说：hello，欢迎") == [("en-us", "PixelFox"), ("cmn", "说："), ("en-us", "hello"), ("cmn", "，欢迎")]
    assert split_by_script("送了10个") == [("cmn", "送了10个")]
    assert split_by_script("!!!") == [("en-us", "!!!")]
