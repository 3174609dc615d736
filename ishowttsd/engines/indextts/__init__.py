"""The IndexTTS2 engine (package `indextts2-inference`): files named for their jobs.

`files` loads and checks every model from local folders, `frontend` is the text front end,
`voices` the per-voice conditioning and its cache, `gpt_fast` our GPT decoding loop, `s2mel`
the flow-matching stage, `vocoder` BigVGAN, `engine` the engine, `bench` its benchmark.
Importing this package is light: torch and indextts load in `IndexTTSEngine.load()`.
"""

from ishowttsd.engines.indextts.engine import IndexTTSEngine, IndexTTSSettings

__all__ = ["IndexTTSEngine", "IndexTTSSettings"]
