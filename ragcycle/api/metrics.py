"""``GET /metrics``: the API's live figures for Prometheus, from the official ``prometheus-client``.

Requests by route and status with their latency, each answer's stages, tokens, cost, guardrail
outcomes and abstentions as they happen; the admission queue, the trace shipper's and the query
log writer's backlogs and drops, and the live index version read when Prometheus scrapes. Every
app has its own registry (no process-wide default), so two apps in one process (tests) do not
share counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ragcycle.api.security import ASGIApp, Message, Receive, Scope, Send
from tasks.guardrails.verdict import reason_kind

__all__ = ["CONTENT_TYPE", "ApiMetrics", "MetricsMiddleware"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Answer latencies on a CPU run from tens of milliseconds (extractive) to tens of seconds (a
# local model under load): the default buckets stop at 10 s.
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120)
_STAGES = ("retrieve", "generate", "guardrails")


class ApiMetrics:
    """The series one API process exports; ``state`` reads the figures kept elsewhere."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "ragcycle_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "ragcycle_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "ragcycle_answer_stage_seconds",
            "Time of each stage of an answer",
            ["stage"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "ragcycle_tokens", "Tokens of served answers", ["kind"], registry=self.registry
        )
        self.cost = Counter(
            "ragcycle_cost_usd", "Cost of served answers in US dollars", registry=self.registry
        )
        self.answers = Counter(
            "ragcycle_answers",
            "Answers served, by guardrail status",
            ["status"],
            registry=self.registry,
        )
        self.guardrail_reasons = Counter(
            "ragcycle_guardrail_reasons",
            "Guardrail findings on served answers, by kind",
            ["reason"],
            registry=self.registry,
        )
        self.abstentions = Counter(
            "ragcycle_abstentions",
            "Answers that said the documents do not answer",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(state))

    def observe_answer(self, answer: dict[str, Any]) -> None:
        """Count one served answer (``AskResult.as_dict()``)."""
        latency = answer.get("latency_ms") or {}
        for stage in _STAGES:
            if stage in latency:
                self.stage_seconds.labels(stage).observe(float(latency[stage]) / 1000)
        for kind, count in (answer.get("tokens") or {}).items():
            self.tokens.labels(kind).inc(max(0, int(count)))
        self.cost.inc(max(0.0, float(answer.get("cost_usd") or 0.0)))
        guardrails = answer.get("guardrails") or {}
        self.answers.labels(str(guardrails.get("status", "unknown"))).inc()
        for reason in guardrails.get("reasons") or []:
            self.guardrail_reasons.labels(reason_kind(reason)).inc()
        if answer.get("abstained"):
            self.abstentions.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Figures other parts keep (admission, shipper, writer, live version), read at scrape."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state()
        if not state:  # the app has not started yet
            return
        queue = state["queue"]
        yield _gauge("ragcycle_admission_running", "Answers being generated", queue["running"])
        yield _gauge("ragcycle_admission_waiting", "Requests queued for a slot", queue["waiting"])
        yield _counter(
            "ragcycle_admission_refused", "Requests refused with 503 (queue full)", queue["refused"]
        )
        for part, figures in (
            ("trace_shipper", state["tracing"]),
            ("query_log", state["query_log"]),
        ):
            yield _gauge(f"ragcycle_{part}_pending", f"{part} writes waiting", figures["pending"])
            yield _counter(f"ragcycle_{part}_dropped", f"{part} writes dropped", figures["dropped"])
            yield _counter(
                f"ragcycle_{part}_failures", f"{part} writes that failed", figures["failures"]
            )
        live = GaugeMetricFamily(
            "ragcycle_live_index_version", "The index version serving answers", labels=["index"]
        )
        if state["live_version"] is not None:
            live.add_metric([state["index"]], state["live_version"])
        yield live


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


class MetricsMiddleware:
    """ASGI middleware counting every request, those refused before the app (401, 413) too.
    Paths the app does not serve share one label, so a scan of random URLs cannot grow the
    series without bound."""

    def __init__(
        self, app: ASGIApp, metrics: ApiMetrics, served: Callable[[], Collection[str]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app fails before it starts a response
        started = time.perf_counter()

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            route = scope["path"] if scope["path"] in self.served() else "other"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(route).observe(time.perf_counter() - started)
