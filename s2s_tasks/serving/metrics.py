"""Prometheus metrics of one server, in a registry of its own (several servers in one process,
as in the tests, do not share counts), and the ASGI middleware that counts every request."""

from __future__ import annotations

import time
from typing import Any, Callable, Collection

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest

#: batch sizes (records or requests per model call)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: request latency, seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: the endpoint label of a request to a path the server does not have (keeps the label set small)
OTHER_ENDPOINT = "other"


class ServerMetrics:
    """The metrics one server exposes at ``GET /metrics``:

    - ``s2s_http_requests_total{endpoint, method, status}``: requests answered;
    - ``s2s_http_request_duration_seconds{endpoint}``: latency, from the request to the response;
    - ``s2s_batch_records`` and ``s2s_batch_requests``: records and requests per model call;
    - ``s2s_records_answered_total{endpoint}``: records answered;
    - ``s2s_model_info{model, task, device}``: what is served.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("s2s_http_requests", "HTTP requests answered, by endpoint, method and status",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("s2s_http_request_duration_seconds", "Time from request to response, by endpoint",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_records = Histogram("s2s_batch_records", "Records per model call", buckets=SIZE_BUCKETS,
                                       registry=self.registry)
        self.batch_requests = Histogram("s2s_batch_requests", "Requests per model call", buckets=SIZE_BUCKETS,
                                        registry=self.registry)
        self.records_answered = Counter("s2s_records_answered", "Records answered, by endpoint", ["endpoint"],
                                        registry=self.registry)
        self.model = Info("s2s_model", "The model served", registry=self.registry)

    def observe_batch(self, records: int, requests: int) -> None:
        self.batch_records.observe(records)
        self.batch_requests.observe(requests)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware that counts every HTTP request (404s and errors too) and its latency.

    Args:
        app: the ASGI app.
        metrics: where to count.
        known_paths: paths counted under their own name; any other is counted as ``other``.
    """

    def __init__(self, app: Callable, metrics: ServerMetrics, known_paths: Collection[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.known_paths = frozenset(known_paths)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> Any:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]  # an exception that escapes the app is a 500

        async def send_and_note_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            endpoint = scope["path"] if scope["path"] in self.known_paths else OTHER_ENDPOINT
            self.metrics.requests.labels(endpoint, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
