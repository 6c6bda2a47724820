"""The guardrails' decision on one answer: pass, warning or fail, and the answer as served.

One function for every caller (``ragcycle ask``, the HTTP API, evaluations), so the rates an
evaluation reports are what production would have done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from tasks.guardrails.degenerate import UNUSABLE, degenerate_reason
from tasks.guardrails.detectors import check_text, find_injection_markers
from tasks.guardrails.pii import PiiDetector, PiiFinding, find_pii, redact

__all__ = ["REASON_KINDS", "REFUSAL", "Verdict", "guard_answer", "reason_kind", "withhold_injected"]


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


# How each reason a verdict gives begins, and the kind it is counted under (a metric label must
# come from a small fixed set; the reasons themselves carry numbers and entity names).
REASON_KINDS = (
    ("prompt injection", "prompt_injection"),
    ("answer echoes the prompt", "echo"),
    ("degenerate answer", "degenerate"),
    ("toxicity", "toxicity"),
    ("personal data in the answer", "pii_blocked"),
    ("personal data redacted", "pii_redacted"),
    ("potential hallucination", "hallucination"),
)


def reason_kind(reason: str) -> str:
    """The kind of a verdict's reason, ``other`` for one this list does not know."""
    return next((kind for start, kind in REASON_KINDS if reason.startswith(start)), "other")


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
    pii: PiiDetector | None = None,
    abstained: bool = False,
) -> Verdict:
    """An answer that echoes the prompt or is degenerate (empty, no words, a loop) -> ``fail``,
    an abstention served instead; toxic -> ``fail``, the answer withheld; personal data ->
    redacted (``warning``) or, with ``pii_action="block"``, withheld (``fail``); sentences the
    context does not support -> ``warning: potential hallucination`` naming them; injected
    chunks kept out -> ``warning``; an answer (not an abstention) with no context at all
    behind it -> ``warning``."""
    from tasks.evaluation.metrics import unsupported_sentences

    report = check_text(answer, toxicity_threshold=toxicity_threshold, pii=pii)
    verdict = Verdict(status="pass", answer=answer, pii_kinds=report.pii_kinds)
    if withheld:
        verdict.withheld_chunks = sorted(withheld)
        names = sorted({name for markers in withheld.values() for name in markers})
        verdict.reasons.append(
            f"prompt injection: {len(withheld)} retrieved chunk(s) kept out of the prompt"
            f" ({', '.join(names)})"
        )
        verdict.status = "warning"
    unusable = degenerate_reason(answer)
    if unusable:
        verdict.reasons.append(unusable)
        verdict.status, verdict.answer = "fail", UNUSABLE
        return verdict
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
        _redacted_part(answer, sentence, report.pii, pii)
        for sentence in unsupported_sentences(answer, contexts, support_threshold)
    ]
    if verdict.unsupported and contexts:
        verdict.reasons.append(
            f"potential hallucination: {len(verdict.unsupported)} sentence(s) not supported by"
            " the retrieved context"
        )
        verdict.status = "warning"
    if not contexts and not abstained:
        # Nothing retrieved, or every chunk withheld as injected: whatever the model said, no
        # document stands behind it.
        verdict.reasons.append("potential hallucination: no supporting context")
        verdict.status = "warning"
    return verdict


def _redacted_part(
    answer: str, part: str, findings: Sequence[PiiFinding], pii: PiiDetector | None
) -> str:
    """``part`` of ``answer`` redacted with the answer's own findings (no second analysis);
    analysed on its own only if it is not found verbatim in the answer."""
    start = answer.find(part)
    if start < 0:
        return redact(part, find_pii(part, pii))
    end = start + len(part)
    inside = [
        replace(f, start=f.start - start, end=f.end - start)
        for f in findings
        if start <= f.start and f.end <= end
    ]
    return redact(part, inside)


def _withheld(verdict: Verdict) -> Verdict:
    verdict.status, verdict.answer = "fail", REFUSAL
    return verdict
