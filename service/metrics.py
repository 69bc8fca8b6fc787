"""Prometheus metrics: requests by route and status, latency per search stage, batch sizes, index."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metrics, in a registry of their own (one per app, so tests don't collide)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("cir_http_requests_total", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("cir_http_request_duration_seconds", "HTTP request latency",
                                 ["route"], buckets=STAGE_BUCKETS, registry=r)
        self.stage = Histogram("cir_search_stage_seconds", "Latency of each search stage",
                               ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.batch = Histogram("cir_batch_size", "Items per micro-batch", ["batcher"],
                               buckets=BATCH_BUCKETS, registry=r)
        self.truncated = Counter("cir_text_truncated_total", "Query texts truncated to the tokenizer length",
                                 registry=r)
        self.index_items = Gauge("cir_index_items", "Items in the served index", registry=r)
        self.index_info = Gauge("cir_index_info", "The served index version (value 1)",
                                ["version", "fingerprint"], registry=r)
        self.swaps = Counter("cir_index_reloads_total", "Index loads by result", ["result"], registry=r)
        self.ready = Gauge("cir_ready", "1 when the model and an index are loaded", registry=r)
        # per gallery (--index NAME=ROOT); the metrics above describe the first gallery
        self.collection_items = Gauge("cir_collection_items", "Items in each gallery's served index",
                                      ["collection"], registry=r)
        self.collection_info = Gauge("cir_collection_info", "Each gallery's served index version (value 1)",
                                     ["collection", "version", "fingerprint"], registry=r)
        self.collection_swaps = Counter("cir_collection_reloads_total", "Index loads by gallery and result",
                                        ["collection", "result"], registry=r)
        self.collection_searches = Counter("cir_collection_searches_total", "Searches answered by gallery",
                                           ["collection"], registry=r)

    def observe_search(self, timings_ms: dict[str, float], text_truncated: bool, collection: str | None = None) -> None:
        """Record one answered search's stage timings (and its gallery)."""
        if collection is not None:
            self.collection_searches.labels(collection).inc()
        for stage, ms in timings_ms.items():
            self.stage.labels(stage).observe(ms / 1000.0)
        if text_truncated:
            self.truncated.inc()

    def observe_batch(self, batcher: str, size: int) -> None:
        """Record one micro-batch's size."""
        self.batch.labels(batcher).observe(size)

    def index_swapped(self, version: str, fingerprint: str, count: int) -> None:
        """Record that `version` is now served."""
        self.index_info.clear()
        self.index_info.labels(version, fingerprint[:12]).set(1)
        self.index_items.set(count)
        self.swaps.labels("ok").inc()
        self.ready.set(1)

    def index_failed(self) -> None:
        """Record a version that failed to load."""
        self.swaps.labels("failed").inc()

    def collection_swapped(self, collection: str, version: str, fingerprint: str, count: int) -> None:
        """Record that a gallery now serves `version`."""
        for labels in [m for m in self.collection_info.collect()[0].samples if m.labels["collection"] == collection]:
            self.collection_info.remove(collection, labels.labels["version"], labels.labels["fingerprint"])
        self.collection_info.labels(collection, version, fingerprint[:12]).set(1)
        self.collection_items.labels(collection).set(count)
        self.collection_swaps.labels(collection, "ok").inc()

    def collection_failed(self, collection: str) -> None:
        """Record a gallery's version that failed to load."""
        self.collection_swaps.labels(collection, "failed").inc()

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


def _route_label(scope: Scope, routes) -> str:
    """The route template from the app's route table (bounded label values); any other path is one label.

    A request answered before routing (a 413 from the body limit) is matched against the table here.
    """
    route = getattr(scope.get("route"), "path", None)
    return route or _match_template(scope, routes, "") or UNMATCHED


def _match_template(scope: Scope, routes, prefix: str) -> str | None:
    for candidate in routes:
        included = getattr(candidate, "original_router", None)  # FastAPI's lazily included router
        if included is not None:
            inner = getattr(getattr(candidate, "include_context", None), "prefix", "") or ""
            if scope["path"].startswith(inner):
                sub = {**scope, "path": scope["path"][len(inner):] or "/"}
                found = _match_template(sub, included.routes, prefix + inner)
                if found:
                    return found
            continue
        try:
            match, _ = candidate.matches(scope)
        except (KeyError, ValueError, TypeError):  # a scope routing never saw (no root_path, ...)
            continue
        if match is not Match.NONE and getattr(candidate, "path", None):
            return prefix + candidate.path
    return None


class MetricsMiddleware:
    """Pure ASGI middleware counting every HTTP response by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes=()) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = _route_label(scope, self.routes)
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
