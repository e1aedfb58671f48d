"""Prometheus metrics of one service, exposed with `prometheus_client`.

Request counts by route and status, request latency by route and model inference time
as histograms, the bytes of uploads still arriving, which model is loaded and how many
reloads replaced it. Each `Metrics`
has its own `CollectorRegistry`, not the process-wide one, so several apps in one
process (the tests) do not clash; `prometheus_client` escapes label values (a model
name may hold any character) and speaks both the text and the OpenMetrics format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

__all__ = ["BUCKETS", "Metrics"]

#: Histogram upper bounds, seconds: from a cached page to a large photo on a slow CPU.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: () -> (labels of the model being served: name, version, runtime; reloads so far).
ModelState = Callable[[], tuple[dict[str, str], int]]


class _ModelCollector(Collector):
    """The served model and the reload count, read from the service at each scrape."""

    def __init__(self, state: ModelState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        model, reloads = self.state()
        yield InfoMetricFamily("segflow_model", "The model being served (value 1).", value=model)
        yield CounterMetricFamily("segflow_model_reloads", "Times a new model replaced the served one.", value=reloads)


class Metrics:
    """The service's metrics; `exposition(accept)` renders them for GET /metrics."""

    def __init__(self, model_state: ModelState, uploading: Callable[[], int] = lambda: 0) -> None:
        """`uploading`: () -> bytes of request bodies received but not yet whole (read at each scrape)."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "segflow_requests",
            "HTTP requests by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "segflow_request_duration_seconds",
            "HTTP request latency, from first byte read to response.",
            ["route"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "segflow_inference_duration_seconds",
            "Model work per image: letterbox, network, resize back (not queueing).",
            ["runtime"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        uploads = Gauge(
            "segflow_upload_bytes_in_progress",
            "Bytes of request bodies received whose last byte has not arrived (serve.max_buffered_bytes caps it).",
            registry=self.registry,
        )
        uploads.set_function(uploading)
        self.registry.register(_ModelCollector(model_state))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_inference(self, runtime: str, seconds: float) -> None:
        self.inference.labels(runtime).observe(seconds)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type): the format the scraper's Accept header asks for, else text 0.0.4."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type
