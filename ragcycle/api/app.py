"""The routes: ``POST /ask``, ``POST /feedback``, ``GET /health``, ``GET /status``; the schema is
at ``/docs``. Routes parse, call the asker and present; every failure is a status with a message.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ragcycle.api.service import Admission, LiveAsker, OverloadedError
from ragcycle.errors import IndexStoreError, RagcycleError, RegistryError
from ragcycle.settings import Settings, load_settings
from tasks.audit import QueryLog, QueryLogWriter
from tasks.tracking.shipping import TraceShipper, tracking_reachable
from tasks.tracking.traces import log_user_feedback

__all__ = ["AskBody", "FeedbackBody", "create_app"]


class AskBody(BaseModel):
    """A question, with optional retrieval depth and metadata filter."""

    question: str = Field(..., min_length=1, max_length=2000)
    k: int | None = Field(None, ge=1, le=50, description="chunks to retrieve")
    where: dict[str, Any] | None = Field(None, description="Chroma metadata filter")
    retrieval: Literal["dense", "lexical", "hybrid"] | None = Field(
        None, description="retrieval mode (default: the live version's config)"
    )
    session_id: str | None = Field(None, max_length=200)


class FeedbackBody(BaseModel):
    """A user's verdict on an answer, by the ``query_id`` that answer came with."""

    query_id: int = Field(..., ge=1)
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=2000)
    expected_answer: str | None = Field(None, max_length=20_000)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ASGI app; the model, embedder and live index load once, when it starts."""
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from ragcycle.runtime import configure_environment

        chosen = settings or load_settings()
        configure_environment(chosen)
        holder["settings"] = chosen
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
        writer = QueryLogWriter(QueryLog(chosen.data_dir / "query_log.sqlite"))
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
    )
    app.state.service = holder  # what the routes share, for /status and for tests to inspect

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        limit = (settings or holder["settings"]).api.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return JSONResponse(
                {"detail": f"request body over {limit} bytes (api.max_body_bytes)"}, 413
            )
        return await call_next(request)

    async def authorised(request: Request) -> None:
        key = holder["settings"].api.api_key
        if key is None:
            return
        given = request.headers.get("x-api-key", "")
        # Constant time, so the comparison does not leak how much of a guess was right.
        if not hmac.compare_digest(given.encode(), key.get_secret_value().encode()):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers. No key needed."""
        return {"status": "ok"}

    @app.post("/ask", dependencies=[Depends(authorised)])
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
        except (IndexStoreError, RegistryError) as exc:
            raise HTTPException(503, str(exc)) from None
        except RagcycleError as exc:
            raise HTTPException(500, str(exc)) from None
        return {**result.as_dict(), "session_id": body.session_id}

    @app.post("/feedback", dependencies=[Depends(authorised)])
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

    @app.get("/status", dependencies=[Depends(authorised)])
    async def status() -> dict[str, Any]:
        """The live version and its config, the last evaluation and decision, the queue."""
        return await run_in_threadpool(_status, holder)

    return app


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

    settings: Settings = holder["settings"]
    live: LiveAsker = holder["asker"]
    admission: Admission = holder["admission"]
    asker = live.current()
    return {
        "index": settings.chroma.collection,
        "live_version": live.version,
        "collection": asker.index.name,
        "config": serving_config(asker.settings),
        "config_summary": config_summary(serving_config(asker.settings)),
        "queue": {
            "running": admission.running,
            "waiting": admission.waiting,
            "refused": admission.refused,
            "max_in_flight": admission.in_flight_limit,
            "max_queue": admission.queue_limit,
        },
        "refresh_failures": live.refresh_failures,
        "tracing": asdict(holder["shipper"].stats()),
        "query_log": holder["writer"].stats(),
        **_latest_runs(settings),
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
