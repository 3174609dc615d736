"""The text front end: upstream's normaliser and BPE tokenizer, loaded once and kept warm.

Upstream's `TextNormalizer` builds nemo-text-processing grammars (about 45 s for English on
two cores) and writes their cache into its own package folder, which a daemon under systemd
cannot write; here the cache lives in a configured folder (by default under the state
directory), is built once at load and reused by every later start. Normalised texts are kept
in a small LRU: chat repeats itself.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ishowttsd.engines.base import EngineError
from ishowttsd.engines.indextts.files import quiet

# sentence ends, as BPE pieces: upstream's split_segments' own, plus "!" and the CJK marks the
# normaliser would have turned into them (without it they reach the tokenizer as they are)
SENTENCE_END = (".", "!", "?", "▁.", "▁?", "▁...", "▁!", "。", "！", "？", "▁。", "▁！", "▁？")


class FrontEnd:
    """Text -> BPE pieces -> segments of token ids, as upstream's `TextTokenizer` makes them."""

    def __init__(self, bpe: Path, normalize: bool, cache_dir: Path | None, language: str | None) -> None:
        with quiet():
            from indextts.utils.front import TextNormalizer, TextTokenizer

        normalizer = None
        if normalize:

            class _Normalizer(TextNormalizer):
                def _get_nemo_normalizer(self, lang: str):
                    from nemo_text_processing.text_normalization.normalize import Normalizer

                    cache_dir.mkdir(parents=True, exist_ok=True)
                    return Normalizer(input_case="cased", lang=lang, cache_dir=str(cache_dir))

            normalizer = _Normalizer(enable_glossary=True, preferred_language=language)
            try:
                with quiet():
                    normalizer.load()
            except Exception as e:
                raise EngineError(
                    f"indextts: the text normaliser (nemo-text-processing) does not build in {cache_dir} "
                    f"({type(e).__name__}: {str(e)[:200]}); set [engine.indextts] normalize = false to speak raw text"
                ) from None
        try:
            with quiet():
                self.tokenizer = TextTokenizer(str(bpe), normalizer)
        except Exception as e:
            raise EngineError(f"indextts: {bpe} is not a sentencepiece model ({type(e).__name__}: {str(e)[:160]}); expected IndexTTS-2's bpe.model") from None
        self.normalizer = normalizer
        self.tokenize = functools.lru_cache(maxsize=512)(self._tokenize)

    def load_glossary(self, path: Path) -> None:
        if self.normalizer is not None and path.is_file():
            self.normalizer.load_glossary_from_yaml(str(path))

    def _tokenize(self, text: str) -> tuple[str, ...]:
        with quiet():
            return tuple(self.tokenizer.tokenize(text))

    def ids(self, pieces: list[str]) -> list[int]:
        return self.tokenizer.convert_tokens_to_ids(list(pieces))

    def segments(self, text: str, max_tokens: int, first_alone: bool) -> list[list[str]]:
        """Upstream's segments (`split_segments`: sentences merged up to `max_tokens` pieces), except
        that with `first_alone` the first sentence is a segment of its own, so it can be spoken
        while the rest is generated."""
        pieces = list(self.tokenize(text))
        split = self.tokenizer.split_segments
        if not first_alone:
            return split(pieces, max_tokens)
        cut = next((i + 1 for i, p in enumerate(pieces) if p in SENTENCE_END and i >= 2), len(pieces))
        if cut >= len(pieces) - 1:  # one sentence (a trailing piece such as ' stays with it)
            return split(pieces, max_tokens)
        return split(pieces[:cut], max_tokens) + split(pieces[cut:], max_tokens)


def normalizer_cache(state_dir: Path, configured: str | None, resolve) -> Path:
    return resolve(configured) if configured else Path(state_dir) / "indextts-normalizer"

