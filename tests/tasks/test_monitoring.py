"""Corpus drift is measured, never made up."""

from __future__ import annotations

from pathlib import Path

from tasks.indexing.store import DocumentState
from tasks.loading import UNREADABLE, SourceFile, hash_sources
from tasks.monitoring import corpus_drift, unindexed_of, unindexed_tag
from tasks.versions import corpus_snapshot


def indexed(**hashes: str) -> dict[str, DocumentState]:
    return {
        doc_id: DocumentState(doc_id, chunks_by_hash={digest: {f"{doc_id}-0"}})
        for doc_id, digest in hashes.items()
    }


def test_no_measured_change_reports_no_drift() -> None:
    """Regression: a snapshot that differed with nothing measured changed reported a made-up
    ``changed: 1`` (the monitor then asked for a reindex that nothing justified)."""
    current = {"a.md": "h1", "scan.pdf": "hs"}
    drift = corpus_drift(
        current, indexed(**{"a.md": "h1"}), built_snapshot="older", unindexed={"scan.pdf": ""}
    )
    assert drift == {"added": 0, "changed": 0, "removed": 0}


def test_an_unindexed_file_that_changed_counts_as_changed() -> None:
    current = {"a.md": "h1", "scan.pdf": "fixed"}
    drift = corpus_drift(
        current,
        indexed(**{"a.md": "h1"}),
        built_snapshot=corpus_snapshot({"a.md": "h1", "scan.pdf": "broken"}),
        unindexed={"scan.pdf": "broken"},
    )
    assert drift == {"added": 0, "changed": 1, "removed": 0}


def test_a_file_that_turns_unreadable_changes_the_snapshot(tmp_path: Path) -> None:
    """Regression: ``hash_sources`` dropped unreadable files, so they never counted as drift."""
    present = tmp_path / "a.md"
    present.write_text("text")
    sources = [
        SourceFile(present, tmp_path, "a.md"),
        SourceFile(tmp_path / "gone.md", tmp_path, "gone.md"),
    ]
    hashes = hash_sources(sources)
    assert hashes["gone.md"] == UNREADABLE and len(hashes["a.md"]) == 64
    drift = corpus_drift(hashes, indexed(**{"a.md": hashes["a.md"], "gone.md": "h2"}))
    assert drift == {"added": 0, "changed": 1, "removed": 0}


def test_the_unindexed_tag_round_trips_and_reads_older_lists() -> None:
    tag = unindexed_tag(["b.pdf", "a.pdf"], {"a.pdf": "ha", "b.pdf": "hb"})
    assert unindexed_of(tag) == {"a.pdf": "ha", "b.pdf": "hb"}
    assert unindexed_of('["old.pdf"]') == {"old.pdf": ""}
    long = unindexed_tag([f"file-{n:04d}.pdf" for n in range(500)], {}, limit=200)
    assert len(long) <= 200 and unindexed_of(long)  # truncated to valid JSON, never cut mid-way
