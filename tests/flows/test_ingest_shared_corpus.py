"""The team's real PDFs (../shared/corpus/pdfs): every text PDF indexed, every other one reported."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from flows.ingest import IngestRequest, ingest
from tests.conftest import live_index, make_settings, shared_path

pytestmark = [pytest.mark.shared, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


def manifest(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "MANIFEST.tsv").open(newline="") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, embedder: Any, prefect_harness: None
) -> tuple[dict[str, Any], Path]:
    folder = shared_path("corpus", "pdfs")
    data = tmp_path_factory.mktemp("shared-pdfs")
    report = ingest(IngestRequest(paths=[str(folder)], overrides=overrides(data)))
    return report, data


def overrides(data: Path) -> dict[str, Any]:
    # 2.1 M characters of PDF text: whole 4,000-character windows, not cut to the model's 256
    # tokens (the model reads the first ~1,000 characters), embed a quarter of the chunks
    # token-fitted ones would. This test is about loading and reporting, not chunk quality.
    return {
        "data_dir": str(data),
        "progress": False,
        "chunking": {"size": 4000, "overlap": 0, "fit_tokens": False},
        "ingest": {"extensions": [".pdf"]},
    }


def test_every_text_pdf_is_indexed_with_pages(ingested: tuple[dict[str, Any], Path]) -> None:
    report, data = ingested
    rows = manifest(shared_path("corpus", "pdfs"))
    index = live_index(make_settings(data))
    states = index.document_states()
    text_files = {name for name, row in rows.items() if row["category"].split(";")[0] == "text"}
    assert text_files <= set(states), sorted(text_files - set(states))
    for name in sorted(text_files):
        pages = int(rows[name]["pages"])
        got = index.collection.get(where={"doc_id": name}, include=["metadatas"])
        page_numbers = {meta["page_start"] for meta in got["metadatas"] or []}
        assert page_numbers and min(page_numbers) >= 1 and max(page_numbers) <= pages, name
    assert report["documents"]["new"] == len(states)


def test_every_other_pdf_is_indexed_or_reported_with_a_reason(
    ingested: tuple[dict[str, Any], Path],
) -> None:
    report, data = ingested
    rows = manifest(shared_path("corpus", "pdfs"))
    states = live_index(make_settings(data)).document_states()
    failed = {item["doc_id"]: item for item in report["failed"]}
    assert set(failed) | set(states) == set(rows)
    assert not set(failed) & set(states)
    for name, row in rows.items():
        category = row["category"]
        if category.startswith("scanned;no-text"):
            assert failed[name]["status"] == "skipped" and "text layer" in failed[name]["reason"]
        elif category == "encrypted":
            assert "password" in failed[name]["reason"], name
        elif category == "malformed" and int(row["pypdf_chars"] or 0) == 0:
            assert name in failed and failed[name]["reason"], name
    # The malformed files pypdf still reads (per the manifest) are worth indexing, not dropping.
    readable_malformed = {
        n
        for n, r in rows.items()
        if r["category"] == "malformed" and int(r["pypdf_chars"] or 0) > 100
    }
    assert readable_malformed <= set(states)


def test_rerun_over_the_corpus_is_a_no_op(ingested: tuple[dict[str, Any], Path]) -> None:
    report, data = ingested
    again = ingest(
        IngestRequest(paths=[str(shared_path("corpus", "pdfs"))], overrides=overrides(data))
    )
    assert (
        again["chunks"]["written"] == again["chunks"]["embedded"] == again["chunks"]["deleted"] == 0
    )
    assert again["documents"]["unchanged"] == report["documents"]["new"]
    assert again["chunks"]["total"] == report["chunks"]["total"]


def test_passwords_from_settings_open_the_encrypted_files(tmp_path: Path, embedder: Any) -> None:
    folder = shared_path("corpus", "pdfs")
    rows = manifest(folder)
    encrypted = sorted(name for name, row in rows.items() if row["category"] == "encrypted")
    corpus = tmp_path / "enc"
    corpus.mkdir()
    for name in encrypted:
        (corpus / name).write_bytes((folder / name).read_bytes())
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nprogress = false\n'
        '[ingest]\npdf_passwords = ["openpassword", "test", "password", "foo"]\n'
    )
    report = ingest(IngestRequest(paths=[str(corpus)], config_file=str(config)))
    assert report["documents"]["failed"] == 0, report["failed"]
    assert report["documents"]["new"] == len(encrypted)
