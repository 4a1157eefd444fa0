"""Replica statistics: Ray Serve metrics (Prometheus, on Ray's metrics port) plus a small
in-process summary reported by ``GET /health`` (requests served and model replicas lost, on
the ingress; recent batch sizes, on a model replica)."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any

LATENCY_BOUNDARIES = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


class Stats:
    """Counts requests by route and status, request latency, batch sizes and requests whose
    model replica was lost (by outcome: ``retried``, ``unavailable``, ``stream_cut``, and
    ``not_taken`` for a request no replica took within ``serve.replica_wait_s``).

    Exported as ``ray_steermoe_requests_total`` (tags ``route``, ``status``),
    ``ray_steermoe_replica_lost_total`` (tag ``outcome``), ``ray_steermoe_request_latency_s``
    and ``ray_steermoe_batch_size`` histograms.
    """

    def __init__(self, *, recent: int = 64) -> None:
        from ray.serve import metrics

        self._requests = metrics.Counter(
            "steermoe_requests", "HTTP requests by route and status", tag_keys=("route", "status")
        )
        self._latency = metrics.Histogram(
            "steermoe_request_latency_s",
            "Request latency until the response starts (s)",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("route",),
        )
        self._batch = metrics.Histogram(
            "steermoe_batch_size", "Requests decoded together", boundaries=BATCH_BOUNDARIES
        )
        self._lost = metrics.Counter(
            "steermoe_replica_lost",
            "Requests whose model replica was lost, by outcome",
            tag_keys=("outcome",),
        )
        self.by_status: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.recent_batches: deque[int] = deque(maxlen=recent)
        self.batches = 0
        self.max_batch = 0

    def request(self, route: str, status: int, seconds: float) -> None:
        """Record one answered request."""
        self._requests.inc(1, tags={"route": route, "status": str(status)})
        self._latency.observe(seconds, tags={"route": route})
        self.by_status[str(status)] += 1

    def replica_lost(self, outcome: str) -> None:
        """Record one request whose model replica was lost (``retried``: sent to another;
        ``unavailable``: answered 503; ``stream_cut``: its stream ended with an error)."""
        self._lost.inc(1, tags={"outcome": outcome})
        self.lost[outcome] += 1

    def batch(self, size: int) -> None:
        """Record one decoded batch (a streamed request decodes alone: size 1)."""
        self._batch.observe(size)
        self.recent_batches.append(size)
        self.batches += 1
        self.max_batch = max(self.max_batch, size)

    def summary(self) -> dict[str, Any]:
        """What ``/health`` reports."""
        return {
            "requests": dict(self.by_status),
            "replica_lost": dict(self.lost),
            "batches": {
                "count": self.batches,
                "max_size": self.max_batch,
                "recent_sizes": list(self.recent_batches),
            },
        }
