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
