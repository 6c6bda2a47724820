from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.ask import Asker
from flows.reindex import ReindexRequest, reindex
from ragcycle.cli import app
from tasks.indexing.store import open_chroma_client
from tasks.versions import VersionRegistry
from tests.conftest import REPO, make_settings, own_cache_env

pytestmark = pytest.mark.usefixtures("prefect_harness")

GOLDEN = REPO / "samples" / "golden.jsonl"


def lifecycle(corpus: Path, data: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data),
        "progress": False,
        "evaluation": {"mlflow_genai": False},
        "lifecycle": {"sources": [str(corpus)], "golden_dataset": str(GOLDEN)},
    }


def registry(data: Path) -> VersionRegistry:
    settings = make_settings(data)
    return VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection)


def test_first_build_promotes_then_same_target_is_a_no_op(
    sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    overrides = lifecycle(sample_corpus, tmp_path / "data")
    first = reindex(ReindexRequest(reason="initial", overrides=overrides))
    assert first["decision"] == "promoted" and first["version"] == 1
    live = registry(tmp_path / "data").live()
    assert live is not None and live.collection == "ragcycle__v1" and live.status == "live"
    assert live.tags["reason"] == "initial" and live.tags["corpus_snapshot"]

    burst = [reindex(ReindexRequest(reason=f"burst {i}", overrides=overrides)) for i in range(3)]
    assert [r["decision"] for r in burst] == ["noop"] * 3
    assert all("is what version 1 serves" in r["reasons"][0] for r in burst)
    assert [v.version for v in registry(tmp_path / "data").versions()] == [1]


def test_worse_candidate_is_rejected_and_live_unchanged_then_rollback(
    sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    data = tmp_path / "data"
    overrides = lifecycle(sample_corpus, data)
    assert reindex(ReindexRequest(overrides=overrides))["decision"] == "promoted"

    # A candidate that indexes only the Markdown files loses most golden sources.
    worse = reindex(
        ReindexRequest(
            reason="md only", config={"ingest": {"extensions": [".md"]}}, overrides=overrides
        )
    )
    assert worse["decision"] == "rejected"
    assert any("hit_rate_at_k may be worse" in reason for reason in worse["reasons"])
    assert worse["reasons"][0].startswith("no candidate beat the live version: best was configured")
    assert "CI [" in worse["reasons"][0]
    [candidate] = worse["candidates"]
    assert candidate["verdict"] == "rejected" and candidate["deltas"]
    versions = {v.version: v for v in registry(data).versions()}
    assert versions[1].live and versions[2].status == "rejected"
    names = {c.name for c in open_chroma_client(make_settings(data)).list_collections()}
    assert "ragcycle__v2" not in names and "ragcycle__v1" in names

    # A different but equally good chunking is promoted; rollback restores version 1.
    better = reindex(
        ReindexRequest(
            reason="smaller chunks",
            config={"chunking": {"size": 600, "overlap": 100}},
            overrides=overrides,
        )
    )
    assert better["decision"] == "promoted", better["reasons"]
    assert registry(data).live().version == better["version"]  # type: ignore[union-attr]
    config = tmp_path / "ragcycle.toml"
    config.write_text(f'data_dir = "{data}"\n')
    rolled = CliRunner().invoke(app, ["index", "rollback", "--json", "-c", str(config)])
    assert rolled.exit_code == 0, rolled.output
    assert json.loads(rolled.stdout)["version"] == 1
    listed = json.loads(
        CliRunner().invoke(app, ["index", "list", "--json", "-c", str(config)]).stdout
    )
    assert {v["version"]: v["status"] for v in listed}[1] == "live"
    asker = Asker(make_settings(data))
    assert asker.index.name == "ragcycle__v1"


def cached_vectors(path: Path) -> int:
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return int(db.execute("SELECT count(*) FROM embeddings").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_killed_rebuild_leaves_live_serving_and_next_rebuild_completes(
    sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    data = tmp_path / "data"
    # Dense retrieval: hybrid already ranks every sample question's source first, so the resumed
    # rebuild's new config could not show the gain a new config needs to be promoted.
    overrides = {**lifecycle(sample_corpus, data), "retrieval": {"mode": "dense"}}
    assert reindex(ReindexRequest(overrides=overrides))["decision"] == "promoted"
    config = tmp_path / "ragcycle.toml"
    config.write_text(
        f'data_dir = "{data}"\nprogress = false\n[chunking]\nsize = 500\n[ingest]\nbatch_documents = 1\n'
        '[retrieval]\nmode = "dense"\n'
        f'[evaluation]\nmlflow_genai = false\n[lifecycle]\nsources = ["{sample_corpus}"]\ngolden_dataset = "{GOLDEN}"\n'
    )
    before = cached_vectors(data / "cache" / "embeddings.sqlite")
    env = own_cache_env(PREFECT_HOME=str(tmp_path / "prefect"))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ragcycle.cli",
            "reindex",
            "--reason",
            "killed",
            "--json",
            "-c",
            str(config),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the kill takes its temporary Prefect server too
    )
    deadline = time.monotonic() + 240
    while (
        cached_vectors(data / "cache" / "embeddings.sqlite") < before + 5
        and process.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert process.poll() is None, process.stdout.read().decode()[-2000:]  # type: ignore[union-attr]
    asker = Asker(make_settings(data))
    during = asker.ask("When was the DMCA signed into law?")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    after = asker.ask("When was the DMCA signed into law?")
    assert "1998" in during.answer and "1998" in after.answer
    assert registry(data).live().version == 1  # type: ignore[union-attr]
    assert registry(data).versions()[-1].status == "building"

    resumed = CliRunner().invoke(
        app, ["reindex", "--reason", "after kill", "--json", "-c", str(config)]
    )
    assert resumed.exit_code == 0, resumed.output
    decision = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert decision["decision"] == "promoted", decision
    statuses = {v.version: v.status for v in registry(data).versions()}
    assert statuses[2] == "failed" and statuses[decision["version"]] == "live"


@pytest.mark.slow
def test_two_reindexes_started_at_once_build_distinct_versions(
    sample_corpus: Path, tmp_path: Path, chroma_server: str
) -> None:
    """Regression: two reindexes started together computed the same next version number
    client-side and built into the same `__vN` collection. Two CLI processes as two workers
    would run them: each its own data dir (one data dir admits one writer), one MLflow registry
    and one Chroma server between them."""
    markdown = sample_corpus / "markdown"
    registry_db = f"sqlite:///{tmp_path / 'shared-mlflow.db'}"

    def config(name: str) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f'data_dir = "{tmp_path / name}"\nprogress = false\n'
            f'[chroma]\nurl = "{chroma_server}"\ncollection = "race"\n'
            f'[mlflow]\ntracking_uri = "{registry_db}"\n'
            f'artifact_location = "{(tmp_path / "artifacts").as_uri()}"\n'
            f"[evaluation]\nmlflow_genai = false\n"
            f'[lifecycle]\nsources = ["{markdown}"]\ngolden_dataset = "{GOLDEN}"\n'
        )
        return path

    def cli(*arguments: str, worker: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "ragcycle.cli", *arguments, "--json", "-c", str(config(worker))],
            env={k: v for k, v in own_cache_env().items() if k != "PREFECT_HOME"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = cli("ingest", worker="w0")
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    racers = [cli("reindex", "--force", "--serial", worker=f"w{i}") for i in (1, 2)]
    results = []
    for racer in racers:
        out, err = racer.communicate(timeout=600)
        assert racer.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    versions = sorted(
        candidate["version"] for result in results for candidate in result["candidates"]
    )
    collections = {c["collection"] for result in results for c in result["candidates"]}
    assert versions == [2, 3] and collections == {"race__v2", "race__v3"}
    assert {r["decision"] for r in results} <= {"promoted", "rejected"}


def test_a_contender_that_fails_to_build_leaves_live_untouched(
    sample_corpus: Path, tmp_path: Path, embedder: Any
) -> None:
    """The reindex fails with the contender's error; its version is marked failed, the parent
    MLflow run ends FAILED (not RUNNING for ever), and the live version keeps serving."""
    from mlflow import MlflowClient

    from ragcycle.errors import ConfigError

    data = tmp_path / "data"
    overrides = lifecycle(sample_corpus, data)
    assert reindex(ReindexRequest(overrides=overrides))["decision"] == "promoted"
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    with pytest.raises(ConfigError, match="not a sentence-transformers model folder"):
        reindex(
            ReindexRequest(
                config={"embedding": {"model_path": str(not_a_model)}}, overrides=overrides
            )
        )
    versions = {v.version: v for v in registry(data).versions()}
    assert versions[1].live and versions[2].status == "failed"
    client = MlflowClient(tracking_uri=make_settings(data).mlflow_tracking_uri)
    experiment = client.get_experiment_by_name("ragcycle-lifecycle")
    assert experiment is not None
    parents = [
        run
        for run in client.search_runs([experiment.experiment_id])
        if run.data.tags.get("mlflow.runName", "").startswith("reindex · ragcycle")
    ]
    assert [run.info.status for run in parents] == ["FAILED"]
