"""Toxic language and prompt-injection markers: offline, deterministic detectors.

Toxicity uses a small lexicon by default; any callable returning a score in [0, 1] can replace it
(see :data:`ToxicityScorer`). Injection markers are patterns of the instructions planted in
documents to steer a model ("ignore previous instructions", chat markup, exfiltration asks).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tasks.guardrails.pii import PiiDetector, PiiFinding, find_pii

__all__ = [
    "GuardrailReport",
    "ToxicityScorer",
    "check_contexts",
    "check_text",
    "find_injection_markers",
    "lexicon_toxicity",
]

ToxicityScorer = Callable[[str], float]


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
    pii: PiiDetector | None = None,
) -> GuardrailReport:
    """Run every detector on one text; ``injection`` is for retrieved context, not answers."""
    score = toxicity(text)
    return GuardrailReport(
        pii=find_pii(text, pii),
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
