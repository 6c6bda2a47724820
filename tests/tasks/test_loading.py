from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr
from pypdf import PdfReader, PdfWriter

from ragcycle.errors import DocumentError
from tasks.loading import (
    SourceFile,
    decode_text,
    discover_sources,
    html_to_text,
    load_document,
    load_documents,
)
from tests.conftest import SAMPLES, shared_path

PDFS = SAMPLES / "pdfs"


def source(path: Path) -> SourceFile:
    return SourceFile(path=path, root=path.parent, doc_id=path.name)


def test_text_pdf_is_read_page_by_page() -> None:
    document = load_document(source(PDFS / "state_of_the_union_2024.pdf"))
    assert document.format == "pdf"
    assert [page.number for page in document.pages] == list(range(1, 27))
    assert "State of the Union" in document.pages[0].text or "Speaker" in document.pages[0].text
    assert len(document.content_hash) == 64


def test_pdf_encrypted_with_empty_user_password_opens() -> None:
    document = load_document(source(PDFS / "dmca_summary.pdf"))
    assert len(document.pages) == 18
    assert "Digital Millennium Copyright Act" in " ".join(p.text for p in document.pages)


def test_pdf_needing_a_password_fails_with_a_reason_until_it_is_configured() -> None:
    path = PDFS / "password_protected.pdf"
    with pytest.raises(DocumentError, match="needs a password"):
        load_document(source(path))
    document = load_document(
        source(path), passwords=[SecretStr("wrong"), SecretStr("openpassword")]
    )
    assert document.char_count > 100


def test_pdf_we_encrypt_ourselves_round_trips(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=PdfReader(PDFS / "zen_of_python.pdf"))
    writer.encrypt(user_password="s3cret", owner_password="owner", algorithm="AES-256")
    target = tmp_path / "locked.pdf"
    with target.open("wb") as handle:
        writer.write(handle)
    with pytest.raises(DocumentError, match="password"):
        load_document(source(target))
    opened = load_document(source(target), passwords=[SecretStr("s3cret")])
    assert "Beautiful is better than ugly" in opened.pages[0].text


@pytest.mark.parametrize(
    ("name", "status", "reason"),
    [
        ("malformed_no_startxref.pdf", "failed", "corrupt PDF"),
        ("scanned_no_text.pdf", "skipped", "no text layer"),
    ],
)
def test_unusable_pdfs_raise_document_errors(name: str, status: str, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason) as caught:
        load_document(source(PDFS / name))
    assert caught.value.status == status


def test_truncated_and_garbage_pdfs_are_reported(tmp_path: Path) -> None:
    whole = (PDFS / "zen_of_python.pdf").read_bytes()
    (tmp_path / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "head.pdf").write_bytes(whole[:200])
    documents, failures = load_documents(discover_sources([tmp_path], [".pdf"]))
    assert documents == []
    reasons = {failure.doc_id: failure.reason for failure in failures}
    assert set(reasons) == {"garbage.pdf", "empty.pdf", "head.pdf"}
    assert reasons["empty.pdf"] == "empty file (0 bytes)"
    assert all(reasons[name].startswith("corrupt PDF") for name in ("garbage.pdf", "head.pdf"))


def test_sparse_pdf_text_is_treated_as_no_text_layer(tmp_path: Path) -> None:
    with pytest.raises(DocumentError, match="no usable text layer"):
        load_document(source(PDFS / "zen_of_python.pdf"), min_pdf_chars_per_page=5000)


@pytest.mark.parametrize(
    ("encoding", "bom"),
    [
        ("utf-8", b""),
        ("utf-8", b"\xef\xbb\xbf"),
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
        ("utf-16-le", b""),
        ("utf-16-be", b""),
        ("utf-32-le", b"\xff\xfe\x00\x00"),
        ("utf-32-be", b""),
        ("latin-1", b""),
    ],
)
def test_text_encodings_are_detected(encoding: str, bom: bytes) -> None:
    text = "Größe und Übermaß: ça coûte 5 € de moins\nSecond line of ordinary text."
    if encoding == "latin-1":
        text = text.replace("€", "EUR")
    assert decode_text(bom + text.encode(encoding)) == text


def test_binary_content_is_undecodable() -> None:
    with pytest.raises(DocumentError, match="undecodable"):
        decode_text(bytes(range(1, 32)) * 50 + b"\xff\xfe\xfd" * 10)


def test_shared_text_edge_cases() -> None:
    folder = shared_path("corpus", "text")
    sources = [
        s for s in discover_sources([folder], [".txt", ".md"]) if "war-and-peace" not in s.doc_id
    ]
    documents, failures = load_documents(sources)
    by_id = {document.doc_id: document for document in documents}
    assert {f.doc_id for f in failures} == {"empty.txt", "fake-text-all-whitespace.txt"}
    assert all(f.status == "skipped" for f in failures)
    for name in ("fake-text-utf-16-be.txt", "fake-text-utf-16-le.txt", "fake-text-utf-32.txt"):
        assert "This is a test document" in by_id[name].pages[0].text, name
    assert by_id["umlauts-non-utf8.md"].pages[0].text == by_id["umlauts-utf8.md"].pages[0].text


def test_html_loses_markup_but_keeps_structure() -> None:
    title, text = html_to_text(
        "<html><head><title>T &amp; C</title><style>p{color:red}</style></head><body>"
        "<h2>Terms</h2><p>First <b>bold</b> para.</p><script>var x = 1;</script><p>Second</p>"
        "</body></html>"
    )
    assert title == "T & C"
    assert "color" not in text and "var x" not in text
    assert "## Terms" in text
    assert "First bold para." in text
    assert text.index("First") < text.index("Second")


def test_sample_html_document() -> None:
    document = load_document(source(SAMPLES / "html" / "fastapi-handling-errors.html"))
    assert document.title == "Handling Errors - FastAPI"
    assert "HTTPException" in document.pages[0].text
    assert "<p>" not in document.pages[0].text and "console.log" not in document.pages[0].text


def test_discovery_gives_relative_ids_and_skips_hidden_and_foreign_files(tmp_path: Path) -> None:
    (tmp_path / "a" / ".git").mkdir(parents=True)
    (tmp_path / "a" / "b.md").write_text("# B")
    (tmp_path / "a" / ".git" / "x.md").write_text("hidden")
    (tmp_path / "c.TXT").write_text("c")
    (tmp_path / "d.docx").write_bytes(b"PK")
    found = discover_sources([tmp_path], [".md", ".txt"])
    assert [s.doc_id for s in found] == ["a/b.md", "c.TXT"]
    single = discover_sources([tmp_path / "d.docx"], [".md"])
    assert [s.doc_id for s in single] == ["d.docx"]
    with pytest.raises(DocumentError, match="unsupported file type"):
        load_document(single[0])


def test_unreadable_and_missing_paths_are_failures(tmp_path: Path) -> None:
    missing = SourceFile(tmp_path / "gone.md", tmp_path, "gone.md")
    folder = SourceFile(tmp_path, tmp_path.parent, tmp_path.name)
    documents, failures = load_documents([missing, folder])
    assert documents == []
    assert [f.reason for f in failures] == ["file not found", "is a directory, not a file"]


def test_content_hash_follows_bytes(tmp_path: Path) -> None:
    path = tmp_path / "n.md"
    path.write_text("one two three")
    first = load_document(source(path)).content_hash
    path.write_text("one two three!")
    assert load_document(source(path)).content_hash != first


def test_the_ingest_report_counts_failed_and_skipped_files_as_its_list_shows_them() -> None:
    """Regression: the Prefect artifact said "failed 3" above a list of 2 failed, 1 skipped."""
    from tasks.loading import LoadFailure
    from tasks.tracking.reports import IngestReport, ingest_report_markdown

    report = IngestReport(collection="docs")
    report.record_failures(
        [
            LoadFailure("a.pdf", "a.pdf", "not a PDF"),
            LoadFailure("b.pdf", "b.pdf", "encrypted"),
            LoadFailure("big.txt", "big.txt", "over the size limit", status="skipped"),
        ]
    )
    markdown = ingest_report_markdown(report)
    assert "| failed | 2 |" in markdown and "| skipped | 1 |" in markdown
    assert "| failed | 3 |" not in markdown
    assert report.as_dict()["documents"]["failed"] == 3  # the JSON counts every file not indexed


def test_a_decision_for_a_first_build_shows_no_number_where_there_is_no_live_version() -> None:
    """Regression: the decision artifact read ``live nan`` for a first build."""
    from tasks.tracking.reports import decision_markdown

    markdown = decision_markdown(
        "docs: reindex · v1 promoted",
        "promoted",
        [],
        [{"metric": "mrr", "candidate": 0.8125, "live": float("nan"), "verdict": "no live"}],
    )
    assert "| mrr | 0.8125 | — | no live |" in markdown
    assert "nan" not in markdown and "v1 promoted" in markdown


def test_two_files_with_one_document_id_are_reported_not_overwritten(tmp_path: Path) -> None:
    """Regression: `ingest a/ b/` where both hold `notes.md` (or two files named alike given
    one by one) silently kept only one of them under the shared document id."""
    from tasks.loading import walk_sources

    for folder, text in (("a", "first"), ("b", "second")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.md").write_text(text)
    found, warnings = walk_sources([tmp_path / "a", tmp_path / "b"], [".md"])
    assert [(s.doc_id, s.path) for s in found] == [("notes.md", tmp_path / "a" / "notes.md")]
    assert warnings == [
        {
            "path": str(tmp_path / "b" / "notes.md"),
            "warning": f"skipped: its document id 'notes.md' is already that of"
            f" {tmp_path / 'a' / 'notes.md'}; ingest both from one parent folder to tell them"
            " apart",
        }
    ]
    files, named = walk_sources([tmp_path / "a" / "notes.md", tmp_path / "b" / "notes.md"], [])
    assert len(files) == 1 and len(named) == 1
    again, none = walk_sources([tmp_path / "a", tmp_path / "a"], [".md"])  # the same file twice
    assert len(again) == 1 and none == []
    whole, clean = walk_sources([tmp_path], [".md"])  # one parent: two distinct ids
    assert [s.doc_id for s in whole] == ["a/notes.md", "b/notes.md"] and clean == []
