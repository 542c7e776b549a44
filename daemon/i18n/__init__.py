"""The languages lipsyncd speaks to people: English (the source) and Simplified Chinese.

What a person reads -- the console's pages and live texts, the failure advice, the chat
messages of webhooks -- is written in English in the code, marked for translation, and
looked up in a gettext catalog per language (``locale/<lang>/LC_MESSAGES/lipsyncd.mo``,
package data, compiled from the ``.po`` beside it by ``scripts/i18n compile``). What a
program reads never changes with the language: error codes, states, the sidecar's fields,
the API's answers, the logs.

Language tags are BCP 47 as browsers send them (``en``, ``zh-CN``); catalogs are stored
under their POSIX names (``zh_CN``). A translator adds a language as the README says
(``scripts/i18n add TAG``); :data:`LANGUAGES` lists the ones shipped.
"""

from __future__ import annotations

import gettext
import re
from functools import lru_cache
from importlib.resources import as_file, files

DOMAIN = "lipsyncd"
SOURCE = "en"
# tag -> the language's own name (what the switch shows, in that language)
LANGUAGES: dict[str, str] = {"en": "English", "zh-CN": "简体中文"}
# the tags a browser or an operator may write for each, lower-cased: zh-Hans, zh-SG, ...
_ALIASES = {"en": "en", "zh": "zh-CN", "zh-cn": "zh-CN", "zh-hans": "zh-CN", "zh-sg": "zh-CN",
            "zh-hans-cn": "zh-CN", "cmn": "zh-CN"}


def N_(message: str) -> str:
    """Marks a message for the catalog where it is defined; it is translated where shown."""
    return message


def posix_name(tag: str) -> str:
    """The catalog folder of a language tag: ``zh-CN`` -> ``zh_CN``."""
    return tag.replace("-", "_")


def supported(tag: str | None) -> str | None:
    """The shipped language a tag means (``zh-Hans-CN`` -> ``zh-CN``, ``en-GB`` -> ``en``), or None."""
    if not tag:
        return None
    low = tag.strip().lower().replace("_", "-")
    if low in _ALIASES:
        return _ALIASES[low]
    primary = low.split("-")[0]
    if primary == "zh" and any(s in low for s in ("-tw", "-hk", "-mo", "-hant")):
        return None  # Traditional Chinese readers are better served by English than by Simplified
    return _ALIASES.get(primary)


_RANGE = re.compile(r"\s*([A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$")


def negotiate(accept_language: str | None, default: str = SOURCE) -> str:
    """The shipped language an ``Accept-Language`` header prefers most, else ``default``."""
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate((accept_language or "")[:1000].split(",")[:30]):
        m = _RANGE.match(item)
        if not m or m.group(1) == "*":
            continue
        try:
            q = float(m.group(2)) if m.group(2) is not None else 1.0
        except ValueError:
            continue
        lang = supported(m.group(1))
        if lang and q > 0:
            ranked.append((-q, i, lang))
    return sorted(ranked)[0][2] if ranked else default


@lru_cache(maxsize=None)
def translations(tag: str) -> gettext.NullTranslations:
    """The catalog of a language (loaded once); English and unknown tags translate to themselves."""
    if tag == SOURCE or tag not in LANGUAGES:
        return gettext.NullTranslations()
    # package data: found through the package wherever it is installed (a wheel, a zip)
    locale = files(__name__) / "locale" / posix_name(tag) / "LC_MESSAGES" / f"{DOMAIN}.mo"
    with as_file(locale) as path, open(path, "rb") as fh:
        return gettext.GNUTranslations(fh)

