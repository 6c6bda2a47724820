"""Phone numbers as documents print them: which of libphonenumber's matches are phone numbers.

libphonenumber (through Presidio) matches any digit run a national format allows, so tables,
dates, amounts, page ranges, arXiv ids and order numbers all read as phone numbers. No library
decides this from the surrounding text, so these shape checks are ours; ``bench/pii.py``
measures them (recall and precision on Faker numbers and look-alike negatives).
"""

from __future__ import annotations

import re

__all__ = ["PHONE_REGIONS", "phone_span"]

# Where numbers without a country code are read as phone numbers (libphonenumber's national
# formats); Presidio's default list leaves out most of Europe.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "AT", "CH", "IE", "CA", "IN")


_COUNTRY_CODE_BEFORE = re.compile(r"\+\d{1,3}[ .-]?$")
_DATE = re.compile(r"\d{1,4}([./-])\d{1,2}\1\d{2,4}")
_DECIMALS_AFTER = re.compile(r"[.,]\d|\s?%")  # an amount or a percentage goes on
# Groups of one to three digits with no + or ( and no trunk 0 in front ("65 39 83 76 55"):
# national formats start with 0 or an area code in brackets; US ones end in four digits.
_TABLE_LIKE = re.compile(r"[1-9]\d{0,2}(?:[ .-]\d{1,3})+")
_ZIP_PLUS_FOUR = re.compile(r"\d{5}[\u2013-]\d{4}")
_RANGE = re.compile(r"(\d+)\s?[\u2013\u2014/-]\s?(\d+)")
# A letter right after the digits makes them part of a word or an id ("2210.03629v2"); an
# extension ("x7783", "ext. 12") is the one letter a phone number is printed with.
_EXTENSION_OR_WORD = re.compile(r"(?!x\d|ext)\w")  # "_" too: "9782340-025998_Nephro.indb"
_MORE_DIGITS_BEFORE = re.compile(r"\d[ .,-]$")
_MORE_DIGITS_AFTER = re.compile(r"[ .-]\d")


def phone_span(text: str, start: int, end: int) -> tuple[int, int] | None:
    """A libphonenumber match as a phone number a document prints, or None for what only reads
    as one: part of an identifier (``SN-187346-4835``, ``#4921``), a date, an amount
    (``169 722,74``), or a bare run of digits that :func:`_bare_phone` does not accept
    (booking and call references). A country code printed before a ``(0)`` trunk prefix joins
    the span."""
    if text.startswith("(", start) and text.count("(", start, end) > text.count(")", start, end):
        start += 1  # the bracket the number is printed in, not an area code's
    prefix = _COUNTRY_CODE_BEFORE.search(text, 0, start) if text.startswith("(", start) else None
    if prefix is not None:
        start = prefix.start()
    before = text[start - 1 : start]
    if before and (before.isalnum() or before in "-/#_"):
        return None
    if _MORE_DIGITS_BEFORE.search(text, 0, start) or _MORE_DIGITS_AFTER.match(text, end):
        return None  # a piece of a longer digit sequence (an account or card number)
    span = text[start:end]
    if sum(ch.isdigit() for ch in span) < 7:  # no phone number is shorter, with its area code
        return None
    if _DATE.match(span) or _DECIMALS_AFTER.match(text, end):
        return None
    if span.isdigit() and not _bare_phone(text, start, end):
        return None
    if _is_isbn(span):
        return None  # ISBN 978-3519122265: a valid ISBN-13 is a book, not a phone
    if not _dialable(span) or _EXTENSION_OR_WORD.match(text, end):
        return None
    if ("\u2013" in span or "\u2014" in span) and not _phone_word_near(text, start, end):
        return None  # en dashes join document and part numbers (AD 2018-23-51) far more often
    return start, end


def _is_isbn(span: str) -> bool:
    from stdnum import isbn

    digits = "".join(ch for ch in span if ch.isdigit())
    return len(digits) == 13 and digits.startswith(("978", "979")) and bool(isbn.is_valid(digits))


def _is_range(span: str) -> bool:
    """``131-140``, ``9459-9474``, ``2013/2014``: two numbers of one length, the second the
    larger."""
    match = _RANGE.fullmatch(span)
    if match is None:
        return False
    low, high = match.group(1), match.group(2)
    return len(low) == len(high) and int(high) > int(low)


def _dialable(span: str) -> bool:
    """Whether ``span`` is shaped like a printed phone number rather than a row of a table
    (``65 39 83 76 55``, ``0 5 10 15 20``), a decimal or an arXiv id (``2204.02311``), or a
    stretch with a stray bracket (``2022) 29.4 56.3``)."""
    if span.count("(") != span.count(")") or _TABLE_LIKE.fullmatch(span):
        return False
    if ". " in span or _ZIP_PLUS_FOUR.fullmatch(span) or _is_range(span):
        return False  # two sentences' numbers, a US ZIP+4 code, a page range (pp. 3558-3567)
    if span.count(".") == 1 and not re.search(r"[ -]", span):
        return False
    if "/" in span and (span.count("/") > 1 or not span.startswith(("0", "+", "("))):
        # A row of fractions (25/30 31/46) or a form number (720/8743): a number printed with
        # a slash is a German or Austrian one, which starts with its trunk 0 (030/1234567).
        return False
    if span.startswith("+"):
        return True
    groups = [group for group in re.split(r"[ .-]+", span.replace("(0)", "")) if group]
    return not any(len(group.strip("()")) == 1 for group in groups)


_PHONE_WORDS = re.compile(
    r"\b(?:phone|tel|telephone|call|mobile|cell|fax|contact|reach|ring|dial|hotline|sms)\b",
    re.IGNORECASE,
)


def _bare_phone(text: str, start: int, end: int) -> bool:
    """A run of digits with no separator is a phone number when it has a trunk or
    international prefix (``0``, ``00``) and a phone's length, or a phone word is near it;
    otherwise it reads as a reference, an order or a booking number."""
    digits = end - start
    if text.startswith("0", start) and 9 <= digits <= 13:
        return True
    return 10 <= digits <= 13 and _phone_word_near(text, start, end)


def _phone_word_near(text: str, start: int, end: int, window: int = 40) -> bool:
    nearby = text[max(0, start - window) : start] + " " + text[end : end + window]
    return bool(_PHONE_WORDS.search(nearby))
