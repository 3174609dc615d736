"""Super Chat amounts as YouTube prints them ("$5.00", "CA$10.00", "¥1,000", "PLN 20.00") as a
number and an ISO 4217 currency code.

YouTube writes the amount for the reader's locale: a symbol or a code before or after the
number, with "," or "." grouping. :func:`parse_amount` never raises: an unknown currency keeps
the symbol as written (``known`` is False), an amount that is no number, or is larger than any
Super Chat can be (``max_value``), keeps no value. The caller counts both; the Super Chat stays a
paid message either way. Pure functions: no I/O, fuzzed by the tests.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass

# the symbols YouTube's web client prints (en locale) and their ISO 4217 codes; other currencies
# appear as their three-letter code ("CHF 5.00", "PLN 20.00")
SYMBOLS = {
    "$": "USD", "US$": "USD", "A$": "AUD", "CA$": "CAD", "HK$": "HKD", "MX$": "MXN", "NT$": "TWD",
    "NZ$": "NZD", "R$": "BRL", "S$": "SGD", "£": "GBP", "€": "EUR", "₹": "INR", "₩": "KRW", "￦": "KRW",
    "¥": "JPY", "JP¥": "JPY", "￥": "JPY", "CN¥": "CNY", "₪": "ILS", "₱": "PHP", "PHP": "PHP", "₫": "VND",
    "₺": "TRY", "₽": "RUB", "₴": "UAH", "zł": "PLN", "฿": "THB", "Rp": "IDR", "RM": "MYR", "₦": "NGN",
}  # fmt: skip
_ISO = re.compile(r"[A-Z]{3}")
_NUMBER = re.compile(r"\d[\d.,\u00a0\u202f ]*")


@dataclass(frozen=True)
class Amount:
    """A parsed purchase amount. `value` is None when there was no believable number."""

    value: float | None
    currency: str  # an ISO 4217 code, or the symbol as written when unknown ("" for none)
    known: bool  # the currency was recognised
    text: str  # the amount as YouTube wrote it, for `extra`
    problem: str = ""  # "", "no_number", "implausible", "unknown_currency"

    @property
    def spoken_currency(self) -> str | None:
        """The currency a Message carries: none without a believable amount, so that a template
        never says a currency alone ("sent a Super Chat", not "sent USD")."""
        return self.currency if self.value is not None and self.currency else None


def parse_amount(text: object, max_value: float = 1e9) -> Amount:
    """Parse a purchase amount text; see the module docstring. Never raises."""
    raw = text if isinstance(text, str) else ""
    raw = unicodedata.normalize("NFC", raw)[:64].strip()
    m = _NUMBER.search(raw)
    symbol = (_NUMBER.sub(" ", raw, count=1) if m else raw).strip()
    symbol = "".join(c for c in symbol if not c.isspace() and unicodedata.category(c)[0] != "C")[:8]
    currency, known = _currency(symbol)
    value = _number(m.group(0)) if m else None
    problem = "" if known else "unknown_currency"
    if m is None or value is None:
        return Amount(None, currency, known, raw, "no_number")
    if not math.isfinite(value) or value > max_value:
        return Amount(None, currency, known, raw, "implausible")
    return Amount(value, currency, known, raw, problem)


def _currency(symbol: str) -> tuple[str, bool]:
    if symbol in SYMBOLS:
        return SYMBOLS[symbol], True
    if _ISO.fullmatch(symbol):
        return symbol, True
    return symbol, False


def _number(s: str) -> float | None:
    """'1,234.56' '1.234,56' '1 234,56' '1,000' '5' -> a float. The last separator followed by
    other than exactly three digits is the decimal point; a lone separator group of three digits
    is grouping (¥1,000 and 1.000 ₩ both mean a thousand)."""
    s = s.strip().replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    s = s.rstrip(".,")
    if len(s) > 32:
        return math.inf  # more digits than any price has
    seps = [i for i, c in enumerate(s) if c in ".,"]
    if seps:
        last = seps[-1]
        tail = s[last + 1 :]
        kinds = {s[i] for i in seps}
        if len(kinds) == 1 and len(tail) == 3 and (len(seps) > 1 or s[last] == "," or len(s[:last]) <= 3):
            s = s.replace(s[last], "")  # only grouping: 1,000 / 1.000.000
        else:
            s = s[:last].replace(".", "").replace(",", "") + "." + tail
    try:
        return float(s)
    except ValueError:
        return None


def checked(value: float | None, currency: object, text: str, max_value: float = 1e9) -> Amount:
    """An amount the platform gave as numbers (the Data API's amountMicros and ISO currency)."""
    code = currency if isinstance(currency, str) else ""
    known = bool(_ISO.fullmatch(code))
    code = code if known else "".join(c for c in code if c.isprintable() and not c.isspace())[:8]
    if value is None:
        return Amount(None, code, known, text, "no_number")
    if not math.isfinite(value) or value > max_value or value < 0:
        return Amount(None, code, known, text, "implausible")
    return Amount(value, code, known, text, "" if known else "unknown_currency")
