"""The routes: ``POST /ask``, ``POST /feedback``, ``GET /health``, ``GET /status`` and
``GET /metrics`` (Prometheus); the schema is at ``/docs`` and ``/openapi.json``. Every route but
``/health`` needs the API key, ``/metrics`` only from another host (:mod:`.security`). Routes
parse, call the asker and present; every failure is a status with a message, a client's mistake
a 4xx that says what to fix.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field

from ragcycle import jsonout
from ragcycle.api.metrics import CONTENT_TYPE, ApiMetrics, MetricsMiddleware
from ragcycle.api.security import ApiKey, Guard, resolve_key
from ragcycle.api.service import Admission, LiveAsker
from ragcycle.errors import (
    FilterError,
    IndexStoreError,
    OverloadedError,
    RagcycleError,
    RegistryError,
)
from ragcycle.settings import Settings, load_settings
from tasks.query_log import QueryLog, QueryLogWriter
from tasks.tracking.shipping import TraceShipper, tracking_reachable
from tasks.tracking.traces import log_user_feedback

__all__ = ["AskBody", "FeedbackBody", "create_app"]

logger = logging.getLogger("ragcycle.api")


def _valid_unicode(text: str | None) -> str | None:
    """Text that can be stored and sent back: a lone surrogate (``"\\ud800"``, valid JSON but
    no character) is refused here instead of failing every write later."""
    if text is not None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text holds a lone surrogate (not valid Unicode)") from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]


class AskBody(BaseModel):
    """A question, with optional retrieval depth and metadata filter."""

    question: Text = Field(..., min_length=1, max_length=2000)
    k: int | None = Field(None, ge=1, le=50, description="chunks to retrieve")
    where: dict[str, Any] | None = Field(None, description="Chroma metadata filter")
    retrieval: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="retrieval mode (default: the live version's config)"
    )
    session_id: Text | None = Field(None, max_length=200)


class FeedbackBody(BaseModel):
    """A user's verdict on an answer, by the ``query_id`` that answer came with."""

    query_id: int = Field(..., ge=1)
    rating: Literal["up", "down"]
    comment: Text | None = Field(None, max_length=2000)
    expected_answer: Text | None = Field(None, max_length=20_000)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; the model, embedder and live index load once, when it starts."""
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from ragcycle.runtime import configure_environment

        chosen = settings or load_settings()
        configure_environment(chosen)
        holder["settings"] = chosen
        holder["key"] = _announce(resolve_key(chosen))
        admission = Admission(chosen.api.max_in_flight, chosen.api.max_queue)
        holder["admission"] = admission
        shipper = TraceShipper(
            functools.partial(tracking_reachable, chosen.mlflow_tracking_uri),
            chosen.tracing.max_pending,
            chosen.tracing.retry_seconds,
            busy=lambda: admission.running + admission.waiting > 0,
            max_delay=chosen.tracing.max_delay_seconds,
        )
        holder["shipper"] = shipper
        writer = QueryLogWriter(QueryLog(chosen.query_log_path))
        holder["writer"] = writer
        live = await run_in_threadpool(_live_asker, chosen, shipper, writer)
        holder["asker"] = live
        live.start()
        yield
        await run_in_threadpool(live.stop)
        await run_in_threadpool(writer.close)
        await run_in_threadpool(shipper.close)

    app = FastAPI(
        title="ragcycle",
        summary="Answers from the live index version, with guardrails on every answer.",
        lifespan=lifespan,
        # Served below, behind the key like every route but /health.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.service = holder  # what the routes share, for /status and for tests to inspect
    limit = (settings or load_settings()).api.max_body_bytes
    metrics = ApiMetrics(lambda: _figures(holder))
    app.add_middleware(Guard, key=lambda: holder.get("key"), limit=limit)
    # Added last, so outermost: it counts the requests the guard refuses too.
    app.add_middleware(MetricsMiddleware, metrics=metrics, served=lambda: _paths(app))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with each problem's place and message; the offending input is not echoed (it
        may be NaN, Infinity or a lone surrogate, which JSON cannot carry back)."""
        problems = [
            {
                "loc": list(error.get("loc", ())),
                "msg": str(error.get("msg", "")),
                "type": error.get("type"),
            }
            for error in exc.errors()
        ]
        return JSONResponse({"detail": jsonout.strict(problems)}, 422)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="ragcycle API")

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers. No key needed."""
        return {"status": "ok"}

    @app.post("/ask")
    async def ask(body: AskBody) -> dict[str, Any]:
        """Answer from the live version; the guardrails' verdict comes with the answer."""
        live: LiveAsker = holder["asker"]
        try:
            async with holder["admission"].slot():
                asker = live.current()
                result = await run_in_threadpool(
                    asker.ask,
                    body.question,
                    body.k,
                    body.where,
                    body.session_id,
                    "api",
                    body.retrieval,
                )
        except OverloadedError:
            retry = str(holder["settings"].api.retry_after_seconds)
            raise HTTPException(
                503, "busy: every generation slot and the queue are full", {"Retry-After": retry}
            ) from None
        except FilterError as exc:
            raise HTTPException(400, str(exc)) from None
        except (IndexStoreError, RegistryError) as exc:
            raise HTTPException(503, str(exc)) from None
        except RagcycleError as exc:
            raise HTTPException(500, str(exc)) from None
        answer = result.as_dict()
        metrics.observe_answer(answer)
        return {**answer, "session_id": body.session_id}

    @app.post("/feedback")
    async def feedback(body: FeedbackBody) -> dict[str, Any]:
        """Record a user's verdict on an answer; an unknown ``query_id`` is a 404."""
        log = holder["asker"].current().log
        # An answer given a moment ago may still be on its way into the log.
        await run_in_threadpool(holder["writer"].wait_for, body.query_id, 5.0)
        recorded = await run_in_threadpool(
            log.add_feedback, body.query_id, body.rating, body.comment, body.expected_answer
        )
        if not recorded:
            raise HTTPException(404, f"no answer with query_id {body.query_id}")
        trace_id = recorded.get("trace_id")
        if trace_id:
            # After the answer's own trace in the shipper's queue, so the trace exists by then.
            holder["shipper"].submit(
                functools.partial(
                    log_user_feedback,
                    trace_id,
                    body.rating,
                    body.comment,
                    recorded.get("session_id"),
                    body.expected_answer,
                )
            )
        return {"recorded": True, "query_id": body.query_id, "trace_id": trace_id}

    @app.get("/status")
    async def status() -> dict[str, Any]:
        """The live version and its config, the last evaluation and decision, the queue."""
        return await run_in_threadpool(_status, holder)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """The Prometheus exposition of this process's figures."""
        return Response(await run_in_threadpool(metrics.exposition), media_type=CONTENT_TYPE)

    return app


def _paths(app: FastAPI) -> set[str]:
    """The paths the app serves, read from its routes (so a new route is counted by name)."""
    return {str(route.path) for route in app.routes if hasattr(route, "path")}


def _figures(holder: dict[str, Any]) -> dict[str, Any]:
    """The live figures the parts keep, for /metrics and /status; empty before the app has
    started."""
    if "asker" not in holder:
        return {}
    admission: Admission = holder["admission"]
    return {
        "index": holder["settings"].chroma.collection,
        "live_version": holder["asker"].version,
        "queue": {
            "running": admission.running,
            "waiting": admission.waiting,
            "refused": admission.refused,
            "max_in_flight": admission.in_flight_limit,
            "max_queue": admission.queue_limit,
        },
        "tracing": asdict(holder["shipper"].stats()),
        "query_log": holder["writer"].stats(),
    }


def _announce(key: ApiKey | None) -> ApiKey | None:
    """Say where the key is and how to send it; a key made just now is news."""
    if key is None:
        logger.warning("api.auth = none: every route is open to anyone who reaches the port")
    elif key.created:
        logger.warning(
            "made an API key in %s (mode 0600); send it as the X-API-Key header, e.g."
            ' curl -H "X-API-Key: $(cat %s)" ...',
            key.origin,
            key.origin,
        )
    else:
        logger.info("every route but /health needs the X-API-Key header (key from %s)", key.origin)
    return key


def _live_asker(settings: Settings, shipper: TraceShipper, writer: QueryLogWriter) -> LiveAsker:
    from flows.ask import Asker
    from tasks.versions import VersionRegistry

    registry = VersionRegistry(settings.mlflow_tracking_uri, settings.chroma.collection)

    def live_version() -> int | None:
        live = registry.live()
        return live.version if live else None

    def build(chosen: Settings) -> Asker:
        return Asker(chosen, ship=shipper.submit, record=writer.submit)

    return LiveAsker(settings, build, live_version)


def _status(holder: dict[str, Any]) -> dict[str, Any]:
    from tasks.versions import config_summary, serving_config

    figures = _figures(holder)
    live: LiveAsker = holder["asker"]
    asker = live.current()
    return {
        "index": figures["index"],
        "live_version": figures["live_version"],
        "collection": asker.index.name,
        "config": serving_config(asker.settings),
        "config_summary": config_summary(serving_config(asker.settings)),
        "queue": figures["queue"],
        "refresh_failures": live.refresh_failures,
        "tracing": figures["tracing"],
        "query_log": figures["query_log"],
        **_latest_runs(holder["settings"]),
    }


def _latest_runs(settings: Settings) -> dict[str, Any]:
    """The last evaluation and monitor decision, or why they cannot be read right now: /status
    must answer while MLflow is down, that is when it is read."""
    from tasks.tracking.runs import latest_runs

    uri = settings.mlflow_tracking_uri
    if not tracking_reachable(uri):
        return {"mlflow": f"unreachable at {uri}"}
    try:
        return {"mlflow": "ok", **latest_runs(uri, settings.mlflow.experiment_prefix)}
    except Exception as exc:  # any failure to read MLflow is reported, not raised
        return {"mlflow": f"unreadable: {exc}"}
