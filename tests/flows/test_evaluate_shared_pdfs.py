"""End-to-end evaluation on the team's real PDFs with a golden set written from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.evaluate import EvaluateRequest, evaluate
from flows.ingest import IngestRequest, ingest
from tests.conftest import REPO, make_settings, shared_path, shuffled_copy

pytestmark = [pytest.mark.shared, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

GOLDEN = REPO / "tests" / "data" / "shared_pdfs_golden.jsonl"


def test_shared_pdfs_evaluate_well_and_a_damaged_index_does_not(
    tmp_path: Path, embedder: Any
) -> None:
    folder = shared_path("corpus", "pdfs")
    # The documents the golden set asks about, plus distractors of similar kinds.
    wanted = {
        line.split('"expected_sources": ["')[1].split('"')[0]
        for line in GOLDEN.read_text().splitlines()
        if '"expected_sources": ["' in line
    }
    distractors = {
        "pdfminer__i1040nr.pdf",
        "unstructured__fr_olap.pdf",
        "pdfplumber__issue-316-example.pdf",
        "unstructured__reliance.pdf",
    }
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in sorted(wanted | distractors):
        (corpus / name).write_bytes((folder / name).read_bytes())
    overrides = {
        "data_dir": str(tmp_path / "data"),
        "progress": False,
        "evaluation": {"mlflow_genai": False},
    }
    ingest(IngestRequest(paths=[str(corpus)], overrides=overrides))

    good = evaluate(EvaluateRequest(dataset=str(GOLDEN), overrides=overrides))["metrics"]
    assert good["hit_rate_at_5"] >= 0.8
    assert good["mrr"] >= 0.7
    assert good["abstained_when_unanswerable"] == 1.0
    assert good["pii_in_context"] > 0  # the creativity paper prints its author's e-mail address
    # the pages an answer can cite: any served chunk counts, not only each document's best
    assert good["page_hit_at_5"] >= good["page_hit_rate"]
    assert good["page_hit_at_5"] >= 0.5
    assert 0 < good["page_recall_at_5"] <= good["page_hit_at_5"]

    shuffled_copy(make_settings(tmp_path / "data"), "ragcycle__v1", "damaged")
    # The damage is to the vectors, which dense retrieval alone reads (BM25 reads the text).
    dense = {**overrides, "retrieval": {"mode": "dense"}}
    good = evaluate(EvaluateRequest(dataset=str(GOLDEN), overrides=dense))["metrics"]
    bad = evaluate(EvaluateRequest(dataset=str(GOLDEN), collection="damaged", overrides=dense))[
        "metrics"
    ]
    assert bad["hit_rate_at_5"] < good["hit_rate_at_5"] - 0.3
    assert bad["ndcg_at_5"] < good["ndcg_at_5"] - 0.3
