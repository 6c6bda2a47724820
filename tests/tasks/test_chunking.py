from __future__ import annotations

import itertools

import pytest

from ragcycle.settings import ChunkingSettings
from tasks.chunking import PAGE_SEPARATOR, chunk_document, split_spans
from tasks.loading import Document, Page

PROSE = (
    "Retrieval-augmented generation grounds a model in documents. It retrieves passages first. "
    "Then it writes an answer that cites them.\n\n"
    "Quality drifts when documents change. A monitor notices the drop. A reindex repairs it.\n\n"
)


def document(*pages: str, doc_id: str = "doc.md", content_hash: str = "h1") -> Document:
    return Document(
        doc_id=doc_id,
        source=f"/c/{doc_id}",
        root="/c",
        content_hash=content_hash,
        format="markdown",
        pages=tuple(Page(number, text) for number, text in enumerate(pages, start=1)),
    )


def joined(doc: Document) -> str:
    return PAGE_SEPARATOR.join(page.text for page in doc.pages)


def test_spans_partition_the_text_and_respect_the_size() -> None:
    text = PROSE * 20
    spans = split_spans(text, 120)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(end - start <= 120 for start, end in spans)


def test_text_without_any_boundary_is_cut_hard() -> None:
    assert split_spans("x" * 25, 10) == [(0, 10), (10, 20), (20, 25)]


def test_sentences_are_the_preferred_cut_below_paragraphs() -> None:
    text = "Aaaa aaaa. Bbbb bbbb. Cccc cccc."
    # 31 characters do not fit in 20; sentence ends come before word gaps.
    assert [text[s:e] for s, e in split_spans(text, 20)] == [
        "Aaaa aaaa. ",
        "Bbbb bbbb. ",
        "Cccc cccc.",
    ]


@pytest.mark.parametrize("strategy", ["recursive", "fixed"])
def test_chunks_fit_cover_the_text_and_overlap(strategy: str) -> None:
    settings = ChunkingSettings(strategy=strategy, size=200, overlap=40)
    doc = document(PROSE * 10)
    chunks = chunk_document(doc, settings)
    text = joined(doc)
    assert len(chunks) > 5
    assert all(len(chunk.text) <= 200 for chunk in chunks)
    assert all(text[chunk.start : chunk.end] == chunk.text for chunk in chunks)
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    overlaps = [a.end - b.start for a, b in itertools.pairwise(chunks)]
    assert sum(1 for overlap in overlaps if overlap > 0) >= len(overlaps) // 2
    assert max(overlaps) <= 40


def test_recursive_chunks_stay_inside_markdown_sections() -> None:
    section = "word " * 60
    text = f"# Install\n\n{section}\n\n## Configure\n\n{section}\n\n## Run\n\n{section}"
    chunks = chunk_document(document(text), ChunkingSettings(size=400, overlap=50))
    assert [chunk.section for chunk in chunks] == ["Install", "Configure", "Run"]
    assert [chunk.text.splitlines()[0] for chunk in chunks] == [
        "# Install",
        "## Configure",
        "## Run",
    ]


def test_page_numbers_follow_the_text() -> None:
    pages = ("alpha " * 50, "beta " * 50, "gamma " * 50)
    chunks = chunk_document(document(*pages), ChunkingSettings(size=150, overlap=0))
    for chunk in chunks:
        words = set(chunk.text.split())
        expected = {
            n for n, word in enumerate(("alpha", "beta", "gamma"), start=1) if word in words
        }
        assert (chunk.page_start, chunk.page_end) == (min(expected), max(expected))


def test_ids_are_deterministic_and_depend_on_content_config_and_position() -> None:
    settings = ChunkingSettings(size=200, overlap=20)
    first = chunk_document(document(PROSE * 3), settings)
    again = chunk_document(document(PROSE * 3), settings)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in again]
    assert len({c.chunk_id for c in first}) == len(first)
    edited = chunk_document(document(PROSE * 3, content_hash="h2"), settings)
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in edited}
    other = chunk_document(document(PROSE * 3), ChunkingSettings(size=200, overlap=30))
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in other}
    # Same text, same vector-cache key, whatever the document.
    assert [c.content_hash for c in first] == [c.content_hash for c in edited]


def test_config_hash_changes_with_every_parameter() -> None:
    base = ChunkingSettings()
    variants = [
        ChunkingSettings(strategy="fixed"),
        ChunkingSettings(size=base.size + 1),
        ChunkingSettings(overlap=base.overlap + 1),
    ]
    assert len({base.config_hash(), *(v.config_hash() for v in variants)}) == 4


def test_overlap_must_be_smaller_than_size() -> None:
    with pytest.raises(ValueError, match="overlap"):
        ChunkingSettings(size=100, overlap=100)
