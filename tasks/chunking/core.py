"""Chunking: documents become overlapping passages small enough for the embedding model.

Two strategies, chosen by ``chunking.strategy``:

- ``recursive`` (default) cuts at the coarsest boundary that fits: Markdown headings, then
  paragraphs, lines, sentences and words, and does not let a chunk run across a heading, so a chunk
  stays inside one section whenever the section is long enough to stand alone.
- ``fixed`` cuts windows of ``size`` characters that overlap by ``overlap``, ending at whitespace.

Every chunk carries character offsets into the document's text (pages joined by a blank line),
the pages it spans, its section heading and heading path, the text the model embeds (see
:mod:`tasks.chunking.context`), its length in the model's tokens and a hash of what is embedded.
With a token budget, chunks whose embedded text the model would truncate are cut further.

Chunk ids hash the document id, the document's content hash, the chunking config hash and the
position, so re-chunking the same bytes with the same config gives the same ids and every write
is an upsert.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from ragcycle.settings import ChunkingSettings
from tasks.chunking.context import TokenBudget, embedded_text, heading_paths
from tasks.loading import Document, LoadFailure
from tasks.text import sentence_breaks

__all__ = [
    "PAGE_SEPARATOR",
    "Chunk",
    "chunk_document",
    "chunk_documents",
    "chunk_documents_task",
    "chunk_id",
    "chunk_within_limit",
    "flatten_chunks",
    "split_spans",
    "text_hash",
]

PAGE_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Chunk:
    """A passage of a document, ready to embed; offsets index into the joined document text."""

    chunk_id: str
    doc_id: str
    text: str
    index: int
    start: int
    end: int
    page_start: int
    page_end: int
    section: str
    content_hash: str  # of the embedded text: the embedding cache's key
    heading_path: str = ""
    embed_text: str | None = None  # None: the text itself
    tokens: int = 0  # of the embedded text, in the model's tokenizer; 0 when not measured

    @property
    def indexed_text(self) -> str:
        """What the embedding model and BM25 read."""
        return self.text if self.embed_text is None else self.embed_text


def chunk_id(doc_id: str, doc_hash: str, config_hash: str, index: int) -> str:
    key = "\x1f".join((doc_id, doc_hash, config_hash, str(index)))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


BreakFinder = Callable[[str, int, int], Iterable[int]]


def _breaks_after(pattern: re.Pattern[str]) -> BreakFinder:
    """Offsets right after each match of ``pattern``: where the next piece starts."""

    def find(text: str, start: int, end: int) -> Iterable[int]:
        return (match.end() for match in pattern.finditer(text, start, end))

    return find


# Boundaries from coarsest to finest; each finder yields the offsets where a new piece starts.
_HEADING = re.compile(r"\n(?=#{1,6} \S)")
_LEVELS: tuple[BreakFinder, ...] = (
    _breaks_after(_HEADING),
    _breaks_after(re.compile(r"\n\s*\n")),
    _breaks_after(re.compile(r"\n")),
    sentence_breaks,
    _breaks_after(re.compile(r"\s+")),
)
_HEADING_LINE = re.compile(r"^(#{1,6}) +(.+?) *#*$", re.MULTILINE)


def split_spans(
    text: str, size: int, start: int = 0, end: int | None = None
) -> list[tuple[int, int]]:
    """Partition ``text[start:end]`` into contiguous spans of at most ``size`` characters.

    Each span ends at the coarsest boundary that keeps it within ``size``; a run of text with no
    boundary at all (a long URL, a table row without spaces) is cut hard.
    """
    end = len(text) if end is None else end
    return _split(text, start, end, size, 0)


def _split(text: str, start: int, end: int, size: int, level: int) -> list[tuple[int, int]]:
    if end - start <= size:
        return [(start, end)] if end > start else []
    if level == len(_LEVELS):
        return [(pos, min(pos + size, end)) for pos in range(start, end, size)]
    cuts = list(_LEVELS[level](text, start, end))
    bounds = [start, *(cut for cut in cuts if start < cut < end), end]
    spans: list[tuple[int, int]] = []
    for left, right in itertools.pairwise(bounds):
        spans.extend(_split(text, left, right, size, level + 1))
    return spans


def _starts_section(text: str, span: tuple[int, int]) -> bool:
    return text.startswith("#", span[0]) and _HEADING_LINE.match(text, span[0]) is not None


def _merge_recursive(
    text: str, spans: list[tuple[int, int]], size: int, overlap: int
) -> list[tuple[int, int]]:
    """Greedily join spans up to ``size``; carry ``overlap`` characters into the next chunk."""
    chunks: list[tuple[int, int]] = []
    current: list[tuple[int, int]] = []
    for span in spans:
        length = span[1] - current[0][0] if current else span[1] - span[0]
        new_section = current and _starts_section(text, span) and _length(current) > size // 4
        if current and (length > size or new_section):
            chunks.append((current[0][0], current[-1][1]))
            room = size - (span[1] - span[0])
            current = [] if new_section else _tail(text, current, min(overlap, room))
        current.append(span)
    if current:
        chunks.append((current[0][0], current[-1][1]))
    return chunks


def _length(spans: list[tuple[int, int]]) -> int:
    return spans[-1][1] - spans[0][0]


def _tail(text: str, spans: list[tuple[int, int]], budget: int) -> list[tuple[int, int]]:
    """The end of a chunk, at most ``budget`` characters, to repeat at the start of the next.

    Whole spans are preferred; when even the last span is longer than the budget, its last
    sentences (or words) are taken instead, so paragraph-sized spans still overlap.
    """
    if budget <= 0:
        return []
    end = spans[-1][1]
    pieces = [span for span in spans if end - span[0] <= budget]
    if not pieces:
        last_start = spans[-1][0]
        pieces = [p for p in split_spans(text, budget, last_start, end) if end - p[0] <= budget]
    return pieces


def _fixed_windows(text: str, size: int, overlap: int) -> list[tuple[int, int]]:
    """Windows of ``size`` characters overlapping by ``overlap``, ending on whitespace."""
    windows: list[tuple[int, int]] = []
    start, length = 0, len(text)
    while start < length:
        end = min(start + size, length)
        if end < length:
            space = text.rfind(" ", start + size * 3 // 4, end)
            newline = text.rfind("\n", start + size * 3 // 4, end)
            end = max(space, newline) + 1 if max(space, newline) > start else end
        windows.append((start, end))
        if end >= length:
            break
        next_start = max(end - overlap, start + 1)
        boundary = text.find(" ", next_start, end)
        start = boundary + 1 if overlap and 0 <= boundary < end - 1 else next_start
    return windows


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _sections(text: str) -> tuple[list[int], list[str], list[int]]:
    """Start offsets, titles and levels of the Markdown headings in ``text``, in order."""
    starts: list[int] = []
    titles: list[str] = []
    levels: list[int] = []
    for match in _HEADING_LINE.finditer(text):
        starts.append(match.start())
        titles.append(match.group(2).strip()[:200])
        levels.append(len(match.group(1)))
    return starts, titles, levels


_Span = tuple[int, int]


def _fit(
    text: str, spans: list[_Span], model_text: Callable[[_Span], str], budget: TokenBudget
) -> list[tuple[_Span, int]]:
    """Cut spans whose embedded text exceeds the budget at their coarsest boundaries, shrinking
    the size in proportion to the overshoot, until every piece fits (or is one character);
    each piece comes with its token count."""
    counts = budget.count([model_text(span) for span in spans])
    fitted: list[tuple[_Span, int]] = []
    for span, tokens in zip(spans, counts, strict=True):
        length = span[1] - span[0]
        if tokens <= budget.limit or length <= 1:
            fitted.append((span, tokens))
            continue
        size = max(1, min(length - 1, length * budget.limit * 9 // (tokens * 10)))
        pieces = [
            _strip_span(text, *piece)
            for piece in _merge_recursive(text, split_spans(text, size, *span), size, 0)
        ]
        fitted.extend(_fit(text, [p for p in pieces if p[0] < p[1]], model_text, budget))
    return fitted


def _unzip(pairs: list[tuple[_Span, int]]) -> tuple[list[_Span], list[int]]:
    return [span for span, _ in pairs], [count for _, count in pairs]


def chunk_document(
    document: Document, settings: ChunkingSettings, budget: TokenBudget | None = None
) -> list[Chunk]:
    """Cut one document into chunks according to ``settings``, each fitting ``budget``."""
    page_starts: list[int] = []
    parts: list[str] = []
    offset = 0
    for page in document.pages:
        page_starts.append(offset)
        parts.append(page.text)
        offset += len(page.text) + len(PAGE_SEPARATOR)
    text = PAGE_SEPARATOR.join(parts)
    page_numbers = [page.number for page in document.pages]
    if settings.strategy == "whole":
        raw = [(0, len(text))]
    elif settings.strategy == "fixed":
        raw = _fixed_windows(text, settings.size, settings.overlap)
    else:
        raw = _merge_recursive(
            text, split_spans(text, settings.size), settings.size, settings.overlap
        )
    section_starts, section_titles, levels = _sections(text)
    paths = heading_paths(levels, section_titles) if settings.heading_context else []
    markup = document.format in {"markdown", "html"}

    def heading_at(start: int) -> int:
        return bisect.bisect_right(section_starts, start) - 1

    def model_text(span: _Span) -> str:
        heading = heading_at(span[0])
        path = paths[heading] if paths and heading >= 0 else ""
        return embedded_text(text[span[0] : span[1]], path, markup)

    spans = [span for span in (_strip_span(text, s, e) for s, e in raw) if span[0] < span[1]]
    if budget is not None and settings.fit_tokens and settings.strategy != "whole":
        spans, tokens = _unzip(_fit(text, spans, model_text, budget))
    else:
        tokens = budget.count([model_text(s) for s in spans]) if budget else [0] * len(spans)
    embedded = [model_text(span) for span in spans]
    config_hash = settings.config_hash()
    chunks: list[Chunk] = []
    for (start, end), indexed, count in zip(spans, embedded, tokens, strict=True):
        body = text[start:end]
        first_page = page_numbers[bisect.bisect_right(page_starts, start) - 1]
        last_page = page_numbers[bisect.bisect_right(page_starts, end - 1) - 1]
        heading = heading_at(start)
        index = len(chunks)
        chunks.append(
            Chunk(
                chunk_id=chunk_id(document.doc_id, document.content_hash, config_hash, index),
                doc_id=document.doc_id,
                text=body,
                index=index,
                start=start,
                end=end,
                page_start=first_page,
                page_end=last_page,
                section=section_titles[heading] if heading >= 0 else "",
                content_hash=text_hash(indexed),
                heading_path=paths[heading] if paths and heading >= 0 else "",
                embed_text=None if indexed == body else indexed,
                tokens=count,
            )
        )
    return chunks


def flatten_chunks(documents: Sequence[Document], chunks: dict[str, list[Chunk]]) -> list[Chunk]:
    """All chunks of ``documents`` in document order: the row order of their vectors."""
    return [chunk for document in documents for chunk in chunks[document.doc_id]]


def chunk_documents(
    documents: Sequence[Document], settings: ChunkingSettings
) -> dict[str, list[Chunk]]:
    """Chunks of each document, keyed by document id."""
    return {document.doc_id: chunk_document(document, settings) for document in documents}


def chunk_within_limit(
    documents: Sequence[Document],
    settings: ChunkingSettings,
    max_chunks: int,
    budget: TokenBudget | None = None,
) -> tuple[list[Document], dict[str, list[Chunk]], list[LoadFailure]]:
    """Chunk ``documents``, skipping any that would exceed ``max_chunks`` chunks.

    A document is measured before it is cut (its length over the chunk size is a lower bound,
    exact for fixed windows), so a 50 MB file is turned away in milliseconds; one the estimate
    lets through but the real count exceeds is dropped after chunking. Either way it is
    reported, never half-indexed.
    """
    kept: list[Document] = []
    chunks: dict[str, list[Chunk]] = {}
    skipped: list[LoadFailure] = []
    step = settings.size - settings.overlap if settings.strategy == "fixed" else settings.size
    for document in documents:
        estimate = 1 if settings.strategy == "whole" else -(-document.char_count // step)
        if estimate <= max_chunks:
            cut = chunk_document(document, settings, budget)
            if len(cut) <= max_chunks:
                kept.append(document)
                chunks[document.doc_id] = cut
                continue
            estimate = len(cut)
        skipped.append(
            LoadFailure(
                document.source,
                document.doc_id,
                f"{estimate:,} chunks or more, over ingest.max_chunks_per_document"
                f" ({max_chunks:,})",
                "skipped",
            )
        )
    return kept, chunks, skipped


@task(name="chunk-documents", task_run_name="chunk-{label}", cache_policy=NO_CACHE)
def chunk_documents_task(
    documents: list[Document], settings: ChunkingSettings, label: str = "batch"
) -> dict[str, list[Chunk]]:
    """Prefect edge of :func:`chunk_documents`."""
    return chunk_documents(documents, settings)
