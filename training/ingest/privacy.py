"""Private details out of the training data: phone numbers, e-mail addresses, payment card and IBAN
numbers, street addresses and URLs that carry tokens become typed placeholders before training.

Real chat exports carry other people's details, and an adapter can learn to repeat them. Detection
uses maintained libraries where one fits offline: Google's libphonenumber (``phonenumbers``) finds
phone numbers written in any of the configured regions' formats (and any ``+`` international number);
``python-stdnum`` checks IBANs and card numbers (Luhn), so ordinary long numbers stay. E-mail
addresses, tokens in URLs and street addresses are matched by patterns (no offline library finds
addresses in free text; the pattern covers "12 Baker Street" / "221B Elm Ave" forms). The logs
themselves are never modified; only the examples built from them are.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from store.privacy_settings import KINDS, PrivacySettings

__all__ = ["KINDS", "PLACEHOLDERS", "PrivacySettings", "privacy_settings", "scrub"]

PLACEHOLDERS = {
    "phone": "[PHONE]",
    "email": "[EMAIL]",
    "card": "[CARD NUMBER]",
    "iban": "[IBAN]",
    "address": "[ADDRESS]",
    "url_token": "[URL]",
}

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_URL_TOKEN = re.compile(
    r"\bhttps?://[^\s<>\"']*?[?&#](?:token|access_token|auth|key|api_key|apikey|sig|signature|secret|"
    r"password|pwd|session|sid|code)=[^\s<>\"']+",
    re.IGNORECASE,
)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?\b")
_STREET_TYPES = (
    "Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Close|"
    "Crescent|Square|Sq|Parkway|Pkwy|Highway|Hwy|Gardens|Row|Mews|Strasse|Straße|Rue|Calle|Via"
)
_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?,?\s+(?:[A-Z][\w'’-]+\s+){{0,3}}(?:{_STREET_TYPES})\b\.?"
    rf"(?:,?\s+(?:Apt|Flat|Unit|Suite)\.?\s*\w+)?"
)


def privacy_settings(section: PrivacySettings | Mapping[str, Any] | None) -> PrivacySettings:
    """The card's ``privacy:`` value as settings; a bad mapping raises a ``ValueError`` naming the field."""
    return PrivacySettings.of(section)


def _phones(text: str, regions: tuple[str, ...]) -> list[tuple[int, int]]:
    import phonenumbers

    spans = set()
    for region in regions:
        for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
            spans.add((match.start, match.end))
    return sorted(spans)


def _valid_card(digits: str) -> bool:
    from stdnum import luhn

    return 13 <= len(digits) <= 19 and luhn.is_valid(digits)


def _valid_iban(text: str) -> bool:
    from stdnum import iban

    return iban.is_valid(text)


def _find(text: str, settings: PrivacySettings) -> list[tuple[int, int, str]]:
    found: list[tuple[int, int, str]] = []
    kinds = set(settings.kinds)
    if "url_token" in kinds:
        found += [(m.start(), m.end(), "url_token") for m in _URL_TOKEN.finditer(text)]
    if "email" in kinds:
        found += [(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)]
    if "iban" in kinds:
        found += [(m.start(), m.end(), "iban") for m in _IBAN.finditer(text) if _valid_iban(m.group())]
    if "card" in kinds:
        found += [
            (m.start(), m.end(), "card") for m in _CARD.finditer(text) if _valid_card(re.sub(r"\D", "", m.group()))
        ]
    if "address" in kinds:
        found += [(m.start(), m.end(), "address") for m in _ADDRESS.finditer(text)]
    if "phone" in kinds:
        found += [(start, end, "phone") for start, end in _phones(text, settings.phone_regions)]
    return found


def scrub(text: str, settings: PrivacySettings = PrivacySettings()) -> tuple[str, Counter]:
    """``text`` with private details replaced, and how many of each kind were replaced.

    Overlapping finds keep the earliest, then the longest (a card number is not also a phone).
    """
    if not settings.enabled or not text:
        return text, Counter()
    spans = sorted(_find(text, settings), key=lambda s: (s[0], -(s[1] - s[0])))
    out, counts, position = [], Counter(), 0
    for start, end, kind in spans:
        if start < position or text[start:end].strip() in settings.allow:
            continue
        out.append(text[position:start])
        out.append(PLACEHOLDERS[kind])
        counts[kind] += 1
        position = end
    out.append(text[position:])
    return "".join(out), counts
