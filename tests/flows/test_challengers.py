"""A quality drop that only a different config fixes: the monitor fails, the reindex tries the
challengers, the paired gate promotes one with its interval, ``ask`` serves its config, and a
rollback restores the previous config and answers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from flows.ask import Asker
from flows.ingest import IngestRequest, ingest
from flows.monitor import MonitorRequest, monitor
from tasks.versions import VersionRegistry
from tests.conftest import make_settings

pytestmark = pytest.mark.usefixtures("prefect_harness")

PLACES = ["Arden", "Brisk", "Colm", "Dunmore", "Elsby", "Farrow", "Galt", "Hollin"]
THINGS = ["observatory", "ferry", "library", "foundry", "orchard", "lighthouse"]
FILLER = (
    "Visitors describe the site as quiet and well kept. Records from the period are patchy,"
    " and local historians still argue about the details. "
)


def write_corpus(folder: Path, seed: int = 11) -> list[dict[str, Any]]:
    """Eight volumes of six sections each, every section about one (thing, place) pair; one
    golden question for every other section. The sections asked about sit deep inside their
    volume, past the first 256 tokens of any 4,000-character window, which is all of a window
    the embedding model reads."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    pairs = [(thing, place) for place in PLACES for thing in THINGS]
    rng.shuffle(pairs)
    golden = []
    for volume in range(8):
        sections = []
        for position, (thing, place) in enumerate(pairs[volume * 6 : volume * 6 + 6]):
            year = rng.randint(1700, 1950)
            sections.append(
                f"## Section {position + 1}\n\n{FILLER * 3}The {thing} of {place} was founded"
                f" in {year} by the {rng.choice(['Ash', 'Birch', 'Cedar'])} family. {FILLER * 2}"
            )
            if position % 2 == 1:
                golden.append(
                    {
                        "question": f"In which year was the {thing} of {place} founded?",
                        "expected_answer": f"The {thing} of {place} was founded in {year}.",
                        "expected_sources": [f"volume-{volume + 1}.md"],
                    }
                )
        (folder / f"volume-{volume + 1}.md").write_text(
            f"# Local histories, volume {volume + 1}\n\n" + "\n\n".join(sections)
        )
    return golden


def test_monitor_drop_reindex_promotes_a_challenger_then_rollback(tmp_path: Path) -> None:
    corpus = tmp_path / "towns"
    golden_path = tmp_path / "golden.jsonl"
    golden = write_corpus(corpus)
    golden_path.write_text("\n".join(json.dumps(row) for row in golden) + "\n")
    data = tmp_path / "data"
    # What the operator has configured: oversized windows read by a model of 256 tokens, and
    # two challengers. One reads the documents in heading-sized chunks.
    overrides: dict[str, Any] = {
        "data_dir": str(data),
        "progress": False,
        "chunking": {"strategy": "fixed", "size": 4000, "overlap": 0, "fit_tokens": False},
        "retrieval": {"k": 2},
        "evaluation": {"mlflow_genai": False, "bootstrap_samples": 500},
        "lifecycle": {
            "sources": [str(corpus)],
            "golden_dataset": str(golden_path),
            "thresholds": {"mrr": 0.8},
            "candidates": [
                {"name": "sections", "chunking": {"strategy": "recursive", "size": 600}},
                {"name": "k1", "retrieval": {"k": 1}},
            ],
        },
    }
    first = ingest(IngestRequest(overrides=overrides))
    assert first["collection"] == "ragcycle__v1"

    checked = monitor(MonitorRequest(overrides=overrides))
    assert checked["decision"] == "reindex"
    assert any(reason.startswith("mrr ") for reason in checked["reasons"])
    decided = checked["triggered"]
    assert decided["decision"] == "promoted", decided["reasons"]
    assert decided["chosen"] == "sections" and decided["version"] == 2
    assert "sections promoted as version 2" in decided["reasons"][0]
    assert "CI [" in decided["reasons"][0]

    by_name = {c["name"]: c for c in decided["candidates"]}
    assert set(by_name) == {"sections", "k1"}  # configured and live equal what v1 serves
    assert any("is what version 1 serves" in line for line in decided["skipped"])
    mrr = next(d for d in by_name["sections"]["deltas"] if d["metric"] == "mrr")
    assert mrr["ci"][0] > 0 and mrr["questions"] == 24
    assert by_name["sections"]["verdict"] == "promoted"
    assert by_name["k1"]["verdict"] == "rejected"
    assert by_name["k1"]["collection"] == "ragcycle__v1"  # query-time only: v1's chunks reused

    # The reindex's task runs in the Prefect UI say which side each one is.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        named = {
            run.name
            for run in client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=" · "))
            )
        }
    assert {"candidate · sections", "candidate · k1", "champion · v1"} <= named

    # The registry's version page opens with what the version is and how it was judged.
    from mlflow import MlflowClient

    settings = make_settings(data)
    page = MlflowClient(settings.mlflow_tracking_uri).get_model_version(
        "ragcycle-index-ragcycle", "2"
    )
    assert page.description.startswith("Chroma collection `ragcycle__v2`, built as candidate")
    assert f"mrr {by_name['sections']['metrics']['mrr']:.3f}" in page.description

    # ask serves with the promoted config; rollback restores v1's config and collection.
    settings = make_settings(data)
    asker = Asker(settings)
    assert asker.index.name == "ragcycle__v2" and asker.settings.chunking.strategy == "recursive"
    question = golden[0]
    answer = asker.ask(question["question"])
    assert answer.sources[0]["source"] == question["expected_sources"][0]
    registry = VersionRegistry(settings.mlflow_tracking_uri, "ragcycle")
    assert registry.rollback().version == 1
    restored = Asker(settings)
    assert restored.index.name == "ragcycle__v1"
    assert restored.settings.chunking.strategy == "fixed"
    assert restored.settings.chunking.size == 4000
    # The shared collection survived k1's rejection: v1 still answers from it.
    assert restored.ask(question["question"]).sources
