"""Guardrails: find PII, toxic language and prompt-injection markers in answers and contexts.

Detectors are offline and deterministic. PII patterns are validated beyond the regex where the
format allows it (Luhn for card numbers, ISO 13616 mod-97 for IBANs, SSA rules for SSNs), because
a bare 16-digit regex flags order numbers and timestamps. Toxicity uses a small lexicon by
default; any callable returning a score in [0, 1] can replace it (see :class:`ToxicityScorer`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "REFUSAL",
    "GuardrailReport",
    "PiiFinding",
    "Verdict",
    "check_contexts",
    "check_text",
    "find_injection_markers",
    "find_pii",
    "guard_answer",
    "iban_is_valid",
    "lexicon_toxicity",
    "luhn_is_valid",
    "redact",
    "withhold_injected",
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


# What a user sees instead of an answer the guardrails withheld.
REFUSAL = "I can't give that answer: it did not pass the safety checks."


@dataclass
class Verdict:
    """The guardrails' decision on one answer, and the answer as it may be served."""

    status: str  # pass | warning | fail
    answer: str
    reasons: list[str] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)
    pii_kinds: list[str] = field(default_factory=list)
    withheld_chunks: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": self.reasons,
            "unsupported": self.unsupported,
            "pii": self.pii_kinds,
            "withheld_chunks": self.withheld_chunks,
        }


def withhold_injected(hits: Sequence[Any]) -> tuple[list[Any], dict[str, list[str]]]:
    """Retrieved chunks without the ones carrying prompt-injection markers, and the markers of
    each withheld chunk by its id: an injected chunk never reaches the prompt."""
    kept: list[Any] = []
    withheld: dict[str, list[str]] = {}
    for hit in hits:
        markers = find_injection_markers(hit.text)
        if markers:
            withheld[hit.chunk_id] = markers
        else:
            kept.append(hit)
    return kept, withheld


def guard_answer(
    answer: str,
    contexts: Sequence[str],
    *,
    toxicity_threshold: float = 0.5,
    pii_action: str = "redact",
    support_threshold: float = 0.8,
    withheld: Mapping[str, list[str]] | None = None,
) -> Verdict:
    """Toxic -> ``fail``, the answer withheld; personal data -> redacted (``warning``) or, with
    ``pii_action="block"``, withheld (``fail``); sentences the context does not support ->
    ``warning: potential hallucination`` naming them; injected chunks kept out -> ``warning``."""
    from tasks.evaluation.metrics import unsupported_sentences

    report = check_text(answer, toxicity_threshold=toxicity_threshold)
    verdict = Verdict(status="pass", answer=answer, pii_kinds=report.pii_kinds)
    if withheld:
        verdict.withheld_chunks = sorted(withheld)
        names = sorted({name for markers in withheld.values() for name in markers})
        verdict.reasons.append(
            f"prompt injection: {len(withheld)} retrieved chunk(s) kept out of the prompt"
            f" ({', '.join(names)})"
        )
        verdict.status = "warning"
    if report.toxic:
        verdict.reasons.append(f"toxicity {report.toxicity:.2f} over {toxicity_threshold}")
        return _withheld(verdict)
    if report.pii:
        if pii_action == "block":
            verdict.reasons.append(f"personal data in the answer: {', '.join(report.pii_kinds)}")
            return _withheld(verdict)
        verdict.answer = redact(answer, report.pii)
        verdict.reasons.append(f"personal data redacted: {', '.join(report.pii_kinds)}")
        verdict.status = "warning"
    # Support is judged on the answer as written (a placeholder like [EMAIL] is not content);
    # the sentences reported are redacted like the answer.
    verdict.unsupported = [
        redact(sentence, find_pii(sentence))
        for sentence in unsupported_sentences(answer, contexts, support_threshold)
    ]
    if verdict.unsupported and contexts:
        verdict.reasons.append(
            f"potential hallucination: {len(verdict.unsupported)} sentence(s) not supported by"
            " the retrieved context"
        )
        verdict.status = "warning"
    return verdict


def _withheld(verdict: Verdict) -> Verdict:
    verdict.status, verdict.answer = "fail", REFUSAL
    return verdict


def redact(text: str, findings: Sequence[PiiFinding]) -> str:
    """``text`` with each finding replaced by its kind, e.g. ``[EMAIL]``."""
    for finding in sorted(findings, key=lambda f: f.start, reverse=True):
        text = text[: finding.start] + f"[{finding.kind.upper()}]" + text[finding.end :]
    return text
