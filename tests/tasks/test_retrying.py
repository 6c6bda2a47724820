"""Prefect retries outages, never mistakes: a task that hits a ConfigError runs once."""

from __future__ import annotations

import pytest
from prefect import flow, task

from ragcycle.errors import ConfigError, IndexStoreError
from tasks.retrying import worth_retrying

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_configuration_errors_run_once_and_outages_are_retried() -> None:
    calls: list[str] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=worth_retrying)
    def failing(kind: str) -> None:
        calls.append(kind)
        raise ConfigError("set x") if kind == "config" else IndexStoreError("server blipped")

    @flow
    def attempt(kind: str) -> None:
        failing(kind)

    with pytest.raises(ConfigError):
        attempt("config")
    with pytest.raises(IndexStoreError):
        attempt("outage")
    assert calls == ["config", "outage", "outage", "outage"]


def test_a_retried_publication_does_not_record_the_decision_twice(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishing a decision (the artifact, the W&B mirror) fails once and is retried; the MLflow
    run that records it is written once."""
    from pathlib import Path

    from mlflow import MlflowClient

    import tasks.tracking.runs as runs

    uri = f"sqlite:///{Path(str(tmp_path)) / 'mlflow.db'}"
    published: list[str] = []

    def flaky_publish(experiment: str, *args: object) -> None:
        published.append(experiment)
        if len(published) == 1:
            raise ConnectionError("artifact store blipped")

    monkeypatch.setattr(runs, "publish_decision", flaky_publish)
    monkeypatch.setattr(runs.publish_decision_task, "retry_delay_seconds", [0, 0])

    @flow
    def decide() -> str:
        return runs.record_decision(
            uri, None, "ragcycle-lifecycle", "Monitor", "ok", [], {"collection": "c"}, []
        )

    run_id = decide()
    assert published == ["ragcycle-lifecycle", "ragcycle-lifecycle"]
    experiment = MlflowClient(uri).get_experiment_by_name("ragcycle-lifecycle")
    assert experiment is not None
    recorded = MlflowClient(uri).search_runs([experiment.experiment_id])
    assert [run.info.run_id for run in recorded] == [run_id]
