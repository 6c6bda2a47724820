"""Guardrails: find PII, toxic language and prompt-injection markers in answers and contexts.

Detectors are offline and deterministic. PII patterns are validated beyond the regex where the
format allows it (Luhn for card numbers, ISO 13616 mod-97 for IBANs, SSA rules for SSNs), because
a bare 16-digit regex flags order numbers and timestamps. Toxicity uses a small lexicon by
default; any callable returning a score in [0, 1] can replace it (see :class:`ToxicityScorer`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

__all__ = [
    "GuardrailReport",
    "PiiFinding",
    "check_contexts",
    "check_text",
    "find_injection_markers",
    "find_pii",
    "iban_is_valid",
    "lexicon_toxicity",
    "luhn_is_valid",
]

ToxicityScorer = Callable[[str], float]


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data; ``value`` is masked so reports never repeat the PII itself."""

    kind: str
    value: str
    start: int
    end: int


@dataclass
class GuardrailReport:
    """What the guardrails found in one text."""

    pii: list[PiiFinding] = field(default_factory=list)
    toxicity: float = 0.0
    toxic: bool = False
    injection: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        return bool(self.pii or self.toxic or self.injection)

    @property
    def pii_kinds(self) -> list[str]:
        return sorted({finding.kind for finding in self.pii})


_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_SSN = re.compile(r"(?<!\d)(\d{3})-(\d{2})-(\d{4})(?!\d)")
# International numbers start with "+"; national ones need a "-" or "." before the last group,
# so runs of space-separated digit groups (account numbers, tables) are not taken for phones.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?\(?\d{1,4}\)?(?:[\s.-]?\d{2,4}){2,4}"
    r"|\(?\d{3}\)?[\s.-]?\d{3}[.-]\d{4})(?![\w-])"
)


def luhn_is_valid(digits: str) -> bool:
    """The Luhn checksum used by payment card numbers."""
    numbers = [int(ch) for ch in digits if ch.isdigit()]
    if len(numbers) < 13:
        return False
    total = 0
    for position, digit in enumerate(reversed(numbers)):
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def iban_is_valid(candidate: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    compact = candidate.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34 or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(numeric) % 97 == 1


def _ssn_is_plausible(area: str, group: str, serial: str) -> bool:
    return (
        area not in {"000", "666"}
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


def _mask(value: str) -> str:
    visible = value[-2:] if len(value) > 4 else ""
    return "*" * (len(value) - len(visible)) + visible


def find_pii(text: str) -> list[PiiFinding]:
    """Emails, phone numbers, card numbers (Luhn), IBANs (mod 97) and US SSNs in ``text``."""
    findings: list[PiiFinding] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, match: re.Match[str]) -> None:
        span = match.span()
        if any(span[0] < end and start < span[1] for start, end in taken):
            return
        taken.append(span)
        findings.append(PiiFinding(kind, _mask(match.group()), *span))

    for match in _EMAIL.finditer(text):
        add("email", match)
    for match in _IBAN.finditer(text):
        if iban_is_valid(match.group()):
            add("iban", match)
    for match in _CARD.finditer(text):
        if luhn_is_valid(match.group()):
            add("credit_card", match)
    for match in _SSN.finditer(text):
        if _ssn_is_plausible(*match.groups()):
            add("us_ssn", match)
    for match in _PHONE.finditer(text):
        if sum(ch.isdigit() for ch in match.group()) >= 9:
            add("phone", match)
    return sorted(findings, key=lambda finding: finding.start)


# A deliberately small lexicon of insults and profanity: enough to catch an answer that turned
# abusive, not a moderation system. Plug in a model scorer for more.
_TOXIC_TERMS = frozenset(
    " ".join(
        (
            "idiot idiots moron morons stupid dumb imbecile loser losers scum bastard bastards",
            "jerk asshole assholes bitch bitches shit bullshit crap damn fuck fucking fucked",
            "motherfucker dickhead prick twat wanker retard retarded pathetic worthless hate",
            "kill die disgusting",
        )
    ).split()
)
_WORD = re.compile(r"[a-z']+")


def lexicon_toxicity(text: str) -> float:
    """Share of words that are abusive, scaled so that one insult in a short answer scores high."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    hits = sum(1 for word in words if word in _TOXIC_TERMS)
    return min(1.0, hits * 10 / len(words)) if hits else 0.0


_INJECTION_RULES: tuple[tuple[str, str], ...] = (
    (
        "ignore-instructions",
        r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier|all)\b.{0,20}"
        r"\b(instructions?|prompts?|rules|directions)",
    ),
    (
        "role-override",
        r"\byou are now\b|\bact as (an? )?(unfiltered|jailbroken|dan)\b|\bdeveloper mode\b",
    ),
    (
        "system-prompt",
        r"\b(reveal|print|show|repeat)\b.{0,30}"
        r"\b(system prompt|hidden instructions|your instructions)",
    ),
    (
        "chat-markup",
        r"<\|?(im_start|im_end|system|endoftext)\|?>|\[/?INST\]|^\s*(system|assistant)\s*:",
    ),
    (
        "exfiltration",
        r"\b(send|post|upload|exfiltrate)\b.{0,40}\b(api key|password|credentials|secrets?)\b",
    ),
)
_INJECTION_PATTERNS = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.MULTILINE)) for name, pattern in _INJECTION_RULES
)


def find_injection_markers(text: str) -> list[str]:
    """Names of prompt-injection patterns present in ``text`` (retrieved context, usually)."""
    return [name for name, pattern in _INJECTION_PATTERNS if pattern.search(text)]


def check_text(
    text: str,
    *,
    toxicity: ToxicityScorer = lexicon_toxicity,
    toxicity_threshold: float = 0.5,
    injection: bool = False,
) -> GuardrailReport:
    """Run every detector on one text; ``injection`` is for retrieved context, not answers."""
    score = toxicity(text)
    return GuardrailReport(
        pii=find_pii(text),
        toxicity=score,
        toxic=score >= toxicity_threshold,
        injection=find_injection_markers(text) if injection else [],
    )


def check_contexts(texts: Iterable[str]) -> list[str]:
    """Injection markers found in any of the retrieved ``texts``, without duplicates."""
    found: list[str] = []
    for text in texts:
        for name in find_injection_markers(text):
            if name not in found:
                found.append(name)
    return found
