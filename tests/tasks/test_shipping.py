"""The trace shipper's bookkeeping, with a switchable stand-in for MLflow's health (the real
writes to MLflow are tested through the API, tests/test_api.py)."""

from __future__ import annotations

import time

from tasks.tracking.shipping import TraceShipper


def wait_until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_writes_wait_while_mlflow_is_down_and_go_out_when_it_is_back() -> None:
    up = {"value": False}
    written: list[int] = []
    shipper = TraceShipper(lambda: up["value"], max_pending=3, retry_seconds=0.05)
    started = time.monotonic()
    for number in range(5):
        shipper.submit(lambda number=number: written.append(number))
    assert time.monotonic() - started < 0.5  # submitting never waits for MLflow
    wait_until(lambda: not shipper.stats().reachable)
    stats = shipper.stats()
    assert (stats.pending, stats.dropped, written) == (3, 2, [])

    up["value"] = True
    wait_until(lambda: shipper.stats().pending == 0)
    assert written == [2, 3, 4]  # the oldest were dropped; the rest went out in order
    assert shipper.stats().shipped == 3 and shipper.stats().reachable
    shipper.close()


def test_a_failing_write_is_counted_and_the_next_one_still_goes_out() -> None:
    written: list[str] = []

    def broken() -> None:
        raise RuntimeError("MLflow said 500")

    shipper = TraceShipper(lambda: True, max_pending=10, retry_seconds=0.05)
    shipper.submit(broken)
    shipper.submit(lambda: written.append("next"))
    shipper.close()
    assert written == ["next"]
    assert (shipper.stats().failures, shipper.stats().shipped) == (1, 1)


def test_writes_wait_for_a_gap_between_requests_but_not_for_ever() -> None:
    busy = {"value": True}
    written: list[float] = []
    shipper = TraceShipper(
        lambda: True, max_pending=10, retry_seconds=0.05, busy=lambda: busy["value"], max_delay=0.5
    )
    started = time.monotonic()
    shipper.submit(lambda: written.append(time.monotonic() - started))
    time.sleep(0.2)
    assert written == []  # requests in flight: the write waits
    busy["value"] = False
    wait_until(lambda: written)
    assert 0.2 <= written[0] < 0.5

    busy["value"] = True
    started = time.monotonic()
    shipper.submit(lambda: written.append(time.monotonic() - started))
    wait_until(lambda: len(written) == 2, 3)
    assert 0.5 <= written[1] < 1.5  # never busy enough to hold a trace past max_delay
    shipper.close()
