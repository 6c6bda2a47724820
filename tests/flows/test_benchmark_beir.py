"""Reproduce the published MTEB number of all-MiniLM-L6-v2 on XQuAD-en (../shared/benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.benchmark import BeirRequest, benchmark_beir
from tests.conftest import shared_path

pytestmark = [pytest.mark.shared, pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

PUBLISHED_NDCG_AT_10 = 0.94357  # ../shared/benchmarks/README.md (MTEB results)


def test_xquad_ndcg_matches_the_published_number(tmp_path: Path, embedder: Any) -> None:
    folder = shared_path("benchmarks", "xquad_en")
    # The published number is dense retrieval's (ragcycle's default mode is hybrid).
    dense = {"retrieval": {"mode": "dense"}}
    overrides = {"data_dir": str(tmp_path / "data"), "progress": False, **dense}
    result = benchmark_beir(BeirRequest(folder=str(folder), overrides=overrides))
    assert result["docs"] == 240 and result["queries"] == 1187
    assert result["metrics"]["ndcg_at_10"] == pytest.approx(PUBLISHED_NDCG_AT_10, abs=0.01)
    assert result["metrics"]["recall_at_10"] >= result["metrics"]["mrr_at_10"]
    # Both UIs name the run after the set and the mode: MLflow's run and Prefect's flow run.
    from mlflow import MlflowClient
    from prefect.client.orchestration import get_client

    from tests.conftest import make_settings

    run = MlflowClient(make_settings(tmp_path / "data").mlflow_tracking_uri).get_run(
        result["run_id"]
    )
    assert run.data.metrics["retrieval/ndcg_at_10"] == result["metrics"]["ndcg_at_10"]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run.data.tags["prefect.flow_run_id"])
    assert flow_run.name == "benchmark · xquad_en · dense"
    assert {"dataset:xquad_en", "retrieval:dense", "backend:torch"} <= set(flow_run.tags)

    again = benchmark_beir(BeirRequest(folder=str(folder), overrides=overrides))
    assert again["metrics"] == result["metrics"]

    # the other retrieval modes, on the same collection (the corpus is not embedded again)
    ndcg = {"dense": result["metrics"]["ndcg_at_10"]}
    for mode in ("lexical", "hybrid"):
        moded = {**overrides, "retrieval": {"mode": mode}}
        scored = benchmark_beir(BeirRequest(folder=str(folder), overrides=moded))
        assert scored["retrieval_mode"] == mode
        ndcg[mode] = scored["metrics"]["ndcg_at_10"]
    assert ndcg["hybrid"] >= ndcg["dense"] - 0.005, ndcg
    assert ndcg["lexical"] != ndcg["dense"]  # a different ranking, not the dense one relabelled
