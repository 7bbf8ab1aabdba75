"""The FastAPI app of ``s2s-tasks serve``: one ``POST /v1/VERB`` route per task (and
``/v1/predict``), ``GET /v1/info``, ``GET /health`` and ``GET /metrics``; every error is a JSON
``{"error": message}`` with its status."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from typing import Any, AsyncIterator, Callable, Dict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException

from s2s_tasks.inference import InvalidRecords
from s2s_tasks.serving.batching import Batcher
from s2s_tasks.serving.metrics import MetricsMiddleware, ServerMetrics
from s2s_tasks.serving.model import Endpoint, ServedModel
from s2s_tasks.serving.options import Batching, Limits
from s2s_tasks.serving.requests import RequestError, parse_request, read_body

log = logging.getLogger(__name__)

STATUS_PATHS = ("/health", "/metrics", "/v1/info")


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _error(status: int, message: str, headers: Dict[str, str] = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def create_app(model: ServedModel, limits: Limits = Limits(), batching: Batching = Batching(),
               device: str = "cpu") -> FastAPI:
    """The app serving ``model`` (its metrics in a registry of its own: ``app.state.metrics``)."""
    metrics = ServerMetrics()
    metrics.model.info({"model": model.name, "task": model.task, "device": device})
    batcher = Batcher(model.answer, batching.max_batch_records, batching.max_wait_ms, on_batch=metrics.observe_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="s2s-tasks", description=f"{model.task} model {model.name}", lifespan=lifespan)
    app.state.metrics = metrics
    app.state.model = model
    routes = [f"POST {e.path}" for e in model.endpoints] + [f"GET {p}" for p in STATUS_PATHS]

    def answerer(endpoint: Endpoint) -> Callable:
        async def answer(request: Request) -> JSONResponse:
            parsed = parse_request(await read_body(request, limits.max_request_bytes), endpoint, limits)
            if parsed.changes:
                try:
                    model.check_changes(parsed.changes)
                except ValueError as err:
                    raise RequestError(422, f"\"parameters\": {err}") from None
            outputs = []
            if parsed.records:
                try:
                    outputs = await batcher.submit(parsed.records, parsed.batch_key, parsed.changes)
                except InvalidRecords as err:
                    raise RequestError(422, str(err)) from None
            metrics.records_answered.labels(endpoint.path).inc(len(outputs))
            body: Dict[str, Any] = {"model": model.name, "task": endpoint.task}
            if parsed.single:
                body["output"] = _finite(outputs[0])
            else:
                body["outputs"] = _finite(outputs)
            return JSONResponse(body)

        answer.__name__ = endpoint.verb
        answer.__doc__ = (f"Answer {endpoint.task} records (fields: {', '.join(endpoint.fields)}): "
                          '{"inputs": [record, ...], "parameters": {...}} -> {"outputs": [answer, ...]}')
        return answer

    for endpoint in model.endpoints:
        app.add_api_route(endpoint.path, answerer(endpoint), methods=["POST"], name=endpoint.verb)

    @app.get("/health")
    async def health() -> Dict[str, Any]:
        """200 once the model is loaded (it is loaded before the server listens)."""
        return {"status": "ok", "model": model.name, "task": model.task, "tasks": model.tasks}

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """The Prometheus text exposition of the server's metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/info")
    async def info() -> Dict[str, Any]:
        """What the server answers: task(s), endpoints with their fields and decoding defaults, limits."""
        return {
            "model": model.name, "task": model.task, "tasks": model.tasks, "device": device,
            "endpoints": {e.path: {"task": e.task, "fields": e.fields, "string_field": e.string_field,
                                   "decoding": None if e.generation is None else dataclasses.asdict(e.generation)}
                          for e in model.endpoints},
            "limits": limits.as_dict(), "batching": dataclasses.asdict(batching),
        }

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return _error(err.status, err.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        where = f"{request.method} {request.url.path}"
        if err.status_code == 404:
            message = f"there is no {where}; this server answers {', '.join(routes)}"
        elif err.status_code == 405:
            message = f"{where} is not allowed; this server answers {', '.join(routes)}"
        else:
            message = f"{where}: {err.detail}"
        return _error(err.status_code, message, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=err)
        return _error(500, f"the server failed to answer ({type(err).__name__}: {err}); see the server log")

    app.add_middleware(MetricsMiddleware, metrics=metrics,
                       known_paths=[e.path for e in model.endpoints] + list(STATUS_PATHS))
    return app
