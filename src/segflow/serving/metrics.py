"""Prometheus metrics in the text exposition format, without a client library.

Request counts by route and status, request latency by route and model inference time
as histograms, and which model is loaded. Five small types are not worth a dependency;
the format is https://prometheus.io/docs/instrumenting/exposition_formats/.
"""
from __future__ import annotations

import threading
from collections import defaultdict

__all__ = ["BUCKETS", "Metrics"]

#: Histogram upper bounds, seconds: from a cached page to a large photo on a slow CPU.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    escaped = (f'{key}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for key, value in pairs)
    return "{" + ",".join(escaped) + "}" if pairs else ""


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value


class Metrics:
    """Thread-safe counters and histograms; `render()` gives the text exposition."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple, int] = defaultdict(int)
        self.latency: dict[tuple, _Histogram] = defaultdict(_Histogram)
        self.inference: dict[tuple, _Histogram] = defaultdict(_Histogram)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("method", method), ("route", route), ("status", str(status)))] += 1
            self.latency[(("route", route),)].observe(seconds)

    def observe_inference(self, runtime: str, seconds: float) -> None:
        with self._lock:
            self.inference[(("runtime", runtime),)].observe(seconds)

    def render(self, model: dict[str, str], reloads: int) -> str:
        lines = [
            "# HELP segflow_requests_total HTTP requests by route and status.",
            "# TYPE segflow_requests_total counter",
        ]
        with self._lock:
            lines += [f"segflow_requests_total{_labels(key)} {n}" for key, n in sorted(self.requests.items())]
            for metric, text, series in (
                ("segflow_request_duration_seconds", "HTTP request latency, from first byte read to response.",
                 self.latency),
                ("segflow_inference_duration_seconds", "Model work per image: letterbox, network, resize back (not queueing).",
                 self.inference),
            ):
                lines += [f"# HELP {metric} {text}", f"# TYPE {metric} histogram"]
                for key, hist in sorted(series.items()):
                    for bound, count in zip(BUCKETS, hist.counts):
                        lines.append(f"{metric}_bucket{_labels(key + (('le', str(bound)),))} {count}")
                    lines.append(f"{metric}_bucket{_labels(key + (('le', '+Inf'),))} {hist.total}")
                    lines.append(f"{metric}_sum{_labels(key)} {hist.sum:.6f}")
                    lines.append(f"{metric}_count{_labels(key)} {hist.total}")
        lines += [
            "# HELP segflow_model_info The model being served (value 1).",
            "# TYPE segflow_model_info gauge",
            f"segflow_model_info{_labels(tuple(sorted(model.items())))} 1",
            "# HELP segflow_model_reloads_total Times a new model replaced the served one.",
            "# TYPE segflow_model_reloads_total counter",
            f"segflow_model_reloads_total {reloads}",
        ]
        return "\n".join(lines) + "\n"
