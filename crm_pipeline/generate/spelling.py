"""How one person's name, email and phone get written down differently in each system.

Variants (case, middle initial, pinyin spacing, plus-tags, phone layouts) are normal life and
not defects; typos, malformed emails and broken phone layouts are defects and are recorded.
"""

from __future__ import annotations

import numpy as np

COUNTRY_CODES = {"en_US": 1, "en_CA": 1, "zh_CN": 86, "de_DE": 49, "en_GB": 44, "fr_FR": 33}
NAME_STYLES = 5
EMAIL_STYLES = 5
PHONE_STYLES = 6


def phone_text(code: int, digits: int, style: int) -> str:
    """One of the layouts people really type, e.g. +1 415 555 0100 / (415) 555-0100."""
    if code == 1:
        d = f"{digits:010d}"
        a, b, c = d[:3], d[3:6], d[6:]
        forms = (
            f"+1 {a} {b} {c}",
            f"({a}) {b}-{c}",
            d,
            f"001-{a}-{b}-{c}",
            f"{a}-{b}-{c}",
            f"+1{d}",
        )
    elif code == 86:
        d = f"{digits:011d}"
        a, b, c = d[:3], d[3:7], d[7:]
        forms = (f"+86 {a} {b} {c}", f"{a} {b} {c}", d, f"0086-{a}-{b}-{c}", f"+86-{d}", f"+86{d}")
    else:
        d = str(digits)
        a, rest = d[:3], d[3:]
        forms = (
            f"+{code} {a} {rest}",
            f"0{a} {rest}",
            f"0{d}",
            f"00{code} {a} {rest}",
            f"+{code} (0){a} {rest}",
            f"+{code}{d}",
        )
    return forms[style]


def phone_texts(codes: np.ndarray, digits: np.ndarray, styles: np.ndarray) -> np.ndarray:
    out = [
        phone_text(int(c), int(d), int(s)) for c, d, s in zip(codes, digits, styles, strict=True)
    ]
    return np.array(out, dtype=object)


def broken_phone(text: str, kind: int) -> str:
    """A layout no normaliser expects: a prefix, a lost digit, an extension, odd separators."""
    if kind == 0:
        return f"tel. {text}"
    if kind == 1:
        return text[:-1]
    if kind == 2:
        return f"{text} ext. {len(text)}"
    return text.replace(" ", ".").replace("-", "/") + " "


def typo(text: str, position: float, kind: int) -> str:
    """Swap two neighbours, drop one or double one letter, at a relative position."""
    if len(text) < 3:
        return text + text[-1:]
    i = min(int(position * (len(text) - 1)), len(text) - 2)
    if kind == 0 and text[i] != text[i + 1]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


def email_text(email: str, style: int) -> str:
    """The same mailbox written another way: case, gmail dots, a plus-tag, stray spaces."""
    if style == 0:
        return email
    local, _, domain = email.partition("@")
    if style == 1:
        return f"{local.title()}@{domain.capitalize()}"
    if style == 2:
        return f"{local.replace('.', '')}@{domain}" if domain == "gmail.com" else email.upper()
    if style == 3:
        return f"{local}+shop@{domain}"
    return f" {email} "


def malformed_email(email: str, kind: int) -> str:
    """An address that cannot be delivered: doubled @, no @, no top-level domain, double dot."""
    if kind == 0:
        return email.replace("@", "@@", 1)
    if kind == 1:
        return email.replace("@", " ", 1)
    if kind == 2:
        return email.rsplit(".", 1)[0]
    return email.replace(".", "..", 1) if "." in email else email + ".."
