"""Golden-set versions: append, archive, manifest, and the digest evaluations record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragcycle.errors import DatasetError
from tasks.evaluation.golden import load_golden
from tasks.evaluation.growth import Reviewed, dataset_version, publish_version, versions_of

FIRST = '{"question": "Who signs tags?", "expected_sources": ["release.md"]}\n'


def test_accepted_questions_become_the_next_version(tmp_path: Path) -> None:
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text(FIRST)
    v1_digest = load_golden(dataset).digest
    assert [v.version for v in versions_of(dataset)] == [1]

    published = publish_version(
        dataset,
        [
            Reviewed("When do background tasks run?", "After the response.", ["tasks.md"], 7),
            Reviewed("What is the capital of Mars?", None),
        ],
    )
    assert (published.version, published.rows, published.added) == (2, 3, 2)
    grown = load_golden(dataset)
    assert grown.digest == published.digest != v1_digest
    assert [item.question for item in grown.items][1:] == [
        "When do background tasks run?",
        "What is the capital of Mars?",
    ]
    assert not grown.items[2].answerable
    assert (tmp_path / "golden.v1.jsonl").read_text() == FIRST
    manifest = json.loads((tmp_path / "golden.versions.json").read_text())
    assert [(m["version"], m["archive"]) for m in manifest] == [(1, "golden.v1.jsonl"), (2, None)]
    assert dataset_version(dataset, v1_digest) == 1
    assert dataset_version(dataset, published.digest) == 2
    assert json.loads(dataset.read_text().splitlines()[1])["origin"] == {"query_id": 7}

    third = publish_version(dataset, [Reviewed("How is CORS configured?", "With middleware.")])
    assert third.version == 3 and (tmp_path / "golden.v2.jsonl").exists()
    assert load_golden(tmp_path / "golden.v2.jsonl").digest == published.digest


def test_nothing_accepted_leaves_the_set_alone(tmp_path: Path) -> None:
    dataset = tmp_path / "golden.jsonl"
    dataset.write_text(FIRST)
    with pytest.raises(DatasetError, match="nothing accepted"):
        publish_version(dataset, [])
    assert dataset.read_text() == FIRST and not (tmp_path / "golden.versions.json").exists()
