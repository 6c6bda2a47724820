from __future__ import annotations

import itertools

import pytest

from ragcycle.settings import ChunkingSettings
from tasks.chunking import (
    PAGE_SEPARATOR,
    TokenBudget,
    chunk_document,
    clean_markdown,
    heading_paths,
    split_spans,
)
from tasks.loading import Document, Page
from tests.conftest import shared_path

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


# --- what the model reads: heading paths, markup, token budgets --------------------------


def test_heading_paths_follow_the_heading_levels() -> None:
    levels = [1, 2, 3, 2, 1]
    titles = ["Tutorial", "Path Parameters", "Order matters", "Data validation", "Next"]
    assert heading_paths(levels, titles) == [
        "Tutorial",
        "Tutorial > Path Parameters",
        "Tutorial > Path Parameters > Order matters",
        "Tutorial > Data validation",
        "Next",
    ]


def test_markdown_markup_is_dropped_from_what_is_embedded() -> None:
    raw = (
        '## Data <dfn title="aka parsing">conversion</dfn> { #data-conversion }\n\n'
        "Open [the docs](http://127.0.0.1:8000/docs) for **FastAPI**.\n\n"
        "/// tip\n\nUse ![a chart](chart.png) here.\n\n///\n\n{* ../src/tutorial001.py hl[6] *}"
    )
    assert clean_markdown(raw) == (
        "Data conversion\n\nOpen the docs for FastAPI.\n\nUse a chart here."
    )


def test_chunks_carry_their_heading_path_and_embed_it() -> None:
    text = (
        "# Path Parameters { #path-parameters }\n\nIntro to [paths](x.md).\n\n"
        "## Order matters\n\n" + "Path operations are evaluated in order. " * 3
    )
    settings = ChunkingSettings(size=120, overlap=0)
    chunks = chunk_document(document(text), settings)
    last = chunks[-1]
    assert last.heading_path == "Path Parameters > Order matters"
    assert last.indexed_text.startswith("Path Parameters > Order matters\n\n")
    # the chunk's own text is under the heading, not beside it: only the path says where it is
    assert "Order matters" not in last.text and "{ #" not in chunks[0].indexed_text
    assert chunks[0].indexed_text.startswith("Path Parameters\n\nPath Parameters\n\nIntro to paths")
    plain = chunk_document(
        document(text), ChunkingSettings(size=120, overlap=0, heading_context=False)
    )
    assert plain[-1].heading_path == ""
    assert plain[-1].indexed_text == plain[-1].text  # no path, and nothing to clean


@pytest.fixture(scope="module")
def budget() -> TokenBudget:
    from ragcycle.settings import load_settings
    from tasks.embedding import token_budget

    found = token_budget(str(load_settings(config_file=None).embedding_model_path()))
    assert found is not None
    return found


def test_the_budget_is_the_models_own_limit(budget: TokenBudget) -> None:
    assert budget.limit == 256  # all-MiniLM-L6-v2's max_seq_length
    assert budget.count(["hello world"]) == [4]  # [CLS] hello world [SEP]


def test_chunks_are_cut_until_the_model_reads_them_whole(budget: TokenBudget) -> None:
    # identifiers and numbers cost several word pieces each: 1,500 characters of them are far
    # more than 256 tokens, where 1,500 characters of plain prose are about 300
    dense = " ".join(f"param_{i}=0x{i * 7919:x}" for i in range(120)) + "\n\n"
    text = "# Reference\n\n" + dense * 2
    settings = ChunkingSettings(size=1500, overlap=100)
    unbounded = chunk_document(
        document(text), settings.model_copy(update={"fit_tokens": False}), budget
    )
    assert any(chunk.tokens > 256 for chunk in unbounded)
    bounded = chunk_document(document(text), settings, budget)
    assert len(bounded) > len(unbounded)
    assert all(0 < chunk.tokens <= 256 for chunk in bounded)
    assert budget.count([c.indexed_text for c in bounded]) == [c.tokens for c in bounded]
    full = joined(document(text))
    covered = {i for chunk in bounded for i in range(chunk.start, chunk.end)}
    assert all(i in covered for i, char in enumerate(full) if not char.isspace())  # none lost


def test_whole_documents_are_never_cut_but_their_overflow_is_measured(budget: TokenBudget) -> None:
    text = "word " * 600
    chunks = chunk_document(document(text), ChunkingSettings(strategy="whole"), budget)
    assert len(chunks) == 1 and chunks[0].tokens > 256


@pytest.mark.shared
def test_fastapi_docs_fit_the_model_when_bounded(budget: TokenBudget) -> None:
    from tasks.loading import load_documents, walk_sources

    folder = shared_path("corpus", "markdown", "fastapi-en", "docs", "tutorial")
    sources, _ = walk_sources([folder], [".md"])
    documents, failures = load_documents(sources)
    assert documents and not failures
    windows = ChunkingSettings(strategy="fixed", size=1000, overlap=0, fit_tokens=False)
    over = [c for d in documents for c in chunk_document(d, windows, budget) if c.tokens > 256]
    assert over, "plain 1,000-character windows overflow the model on these docs"
    bounded = [c for d in documents for c in chunk_document(d, ChunkingSettings(), budget)]
    assert max(chunk.tokens for chunk in bounded) <= 256
