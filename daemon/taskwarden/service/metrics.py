"""Prometheus metrics (prometheus-client), on a registry of the daemon's own.

The `Metrics` object lives as long as the process: a reload rebuilds sources and notifiers
but never these counters. Vendor API calls are counted as they happen (`Metrics` is the
sources' `CallMeter`); what already lives elsewhere (delivery totals in the sender,
outbox depth and task counts in the state) is read at scrape time by a collector, so there
is a single source of truth for each figure.
"""

from __future__ import annotations

import platform
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from taskwarden import __version__
from taskwarden.errors import StateError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from datetime import datetime

    from prometheus_client.core import Metric

    from taskwarden.outbox import DeliveryReport

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Observable(Protocol):
    """What the collector reads from the running daemon at scrape time."""

    def delivery_totals(self) -> DeliveryReport: ...
    def outbox(self) -> tuple[int, float | None]:
        """Pending entries and the age of the oldest, in seconds."""
        ...

    def task_counts(self) -> Mapping[tuple[str, str], int]: ...
    def last_successes(self) -> Mapping[str, datetime]: ...
    def leases_held(self) -> Mapping[str, bool]:
        """Per lease (``source:…``, ``receiver:…``): held by this replica and usable now."""
        ...


class _LiveCollector(Collector):
    def __init__(self, daemon: Observable) -> None:
        self._daemon = daemon

    def collect(self) -> Iterator[Metric]:
        delivered = CounterMetricFamily(
            "taskwarden_notifications",
            "Notifications by receiver and result (sent, retried, given_up)",
            labels=["receiver", "result"],
        )
        totals = self._daemon.delivery_totals()
        for result, counter in (
            ("sent", totals.sent),
            ("retried", totals.retried),
            ("given_up", totals.dead),
        ):
            for receiver, count in sorted(counter.items()):
                delivered.add_metric([receiver, result], count)
        yield delivered
        try:  # from the state: a scrape while the state is in trouble still answers
            depth, oldest = self._daemon.outbox()
            counts = self._daemon.task_counts()
        except StateError:
            depth, oldest, counts = -1, None, {}
        yield GaugeMetricFamily(
            "taskwarden_outbox_depth", "Notifications waiting (-1: the state is unreadable)",
            value=depth,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "taskwarden_outbox_oldest_age_seconds",
            "Age of the oldest waiting notification (0 when empty)",
            value=oldest or 0.0,
        )
        tasks = GaugeMetricFamily(
            "taskwarden_tasks", "Tracked tasks by source and status", labels=["source", "status"]
        )
        for (source_name, status), count in sorted(counts.items()):
            tasks.add_metric([source_name, status], count)
        yield tasks
        last = GaugeMetricFamily(
            "taskwarden_last_successful_poll_timestamp_seconds",
            "Unix time of the last successful poll of each source",
            labels=["source"],
        )
        for name, moment in sorted(self._daemon.last_successes().items()):
            last.add_metric([name], moment.timestamp())
        yield last
        held = GaugeMetricFamily(
            "taskwarden_lease_held",
            "1 while this replica polls the source / delivers the receiver of the lease",
            labels=["lease"],
        )
        for name, holds in sorted(self._daemon.leases_held().items()):
            held.add_metric([name], 1.0 if holds else 0.0)
        yield held


class Metrics:
    def __init__(self, daemon: Observable) -> None:
        self.registry = CollectorRegistry()
        self.polls = Counter(
            "taskwarden_polls",
            "Poll cycles by source and outcome (ok, failed, skipped; fenced: the lease moved on)",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.poll_seconds = Histogram(
            "taskwarden_poll_duration_seconds",
            "Duration of poll cycles",
            ["source"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.alerts = Counter(
            "taskwarden_alerts",
            "Alert changes by source and kind (fired, resolved)",
            ["source", "change"],
            registry=self.registry,
        )
        self.api_calls = Counter(
            "taskwarden_api_calls",
            "Vendor API requests by source, endpoint and HTTP status (retries included)",
            ["source", "endpoint", "status"],
            registry=self.registry,
        )
        self.records_rejected = Counter(
            "taskwarden_records_rejected",
            "Unusable records in vendor answers, skipped, by source and reason",
            ["source", "reason"],
            registry=self.registry,
        )
        self.trouble = Counter(
            "taskwarden_daemon_trouble",
            "Failures of the daemon itself (state writes, delivery rounds), by condition",
            ["condition"],
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "taskwarden_heartbeats",
            "Dead man's switch pings by result (sent, failed, withheld while unhealthy)",
            ["result"],
            registry=self.registry,
        )
        self.build_info = Gauge(
            "taskwarden_build_info",
            "Always 1; the labels say which taskwarden and Python run",
            ["version", "python"],
            registry=self.registry,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.config_reload_ok = Gauge(
            "taskwarden_config_last_reload_successful",
            "1 when the last configuration load (start or SIGHUP) was accepted, 0 when rejected",
            registry=self.registry,
        )
        self.config_reload_at = Gauge(
            "taskwarden_config_last_reload_success_timestamp_seconds",
            "Unix time of the last accepted configuration load",
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(daemon))

    def config_loaded(self, *, accepted: bool, at: datetime) -> None:
        """A configuration load (the start, a reload) was accepted or rejected."""
        self.config_reload_ok.set(1 if accepted else 0)
        if accepted:
            self.config_reload_at.set(at.timestamp())

    def count(self, source: str, endpoint: str, outcome: str) -> None:
        """`CallMeter`: one vendor API attempt."""
        self.api_calls.labels(source, endpoint, outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
