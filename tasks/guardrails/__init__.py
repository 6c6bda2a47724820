"""Guardrails: personal data, toxic language and prompt injection, in answers, in retrieved
context and in documents as they are ingested. Detectors are offline; PII uses Presidio with a
spaCy NER model (:mod:`tasks.guardrails.pii`)."""

from tasks.guardrails.detectors import (
    GuardrailReport,
    ToxicityScorer,
    check_contexts,
    check_text,
    find_injection_markers,
    lexicon_toxicity,
)
from tasks.guardrails.pii import (
    DEFAULT_ENTITIES,
    PiiDetector,
    PiiFinding,
    find_pii,
    iban_is_valid,
    luhn_is_valid,
    pii_detector,
    redact,
)
from tasks.guardrails.verdict import REFUSAL, Verdict, guard_answer, withhold_injected

__all__ = [
    "DEFAULT_ENTITIES",
    "REFUSAL",
    "GuardrailReport",
    "PiiDetector",
    "PiiFinding",
    "ToxicityScorer",
    "Verdict",
    "check_contexts",
    "check_text",
    "find_injection_markers",
    "find_pii",
    "guard_answer",
    "iban_is_valid",
    "lexicon_toxicity",
    "luhn_is_valid",
    "pii_detector",
    "redact",
    "withhold_injected",
]
