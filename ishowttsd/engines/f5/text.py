"""F5-TTS text: the reference transcript as upstream feeds it, and text split into sentence chunks."""

from __future__ import annotations

import re

# sentence ends (kept with the sentence); commas and spaces split an over-long sentence
_SENTENCE = re.compile(r"[^。！？!?；;…\n]*?(?:[。！？!?；;…\n]+|[.](?=\s|$)|$)")
_SOFT = re.compile(r"(?<=[，,、：:])|(?<=\s)")


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
