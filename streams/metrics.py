"""Prometheus metrics, built on a registry passed in (never the global one).

No per-sensor labels: cardinality stays bounded by kinds, reasons, rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    messages: Counter
    readings: Counter
    unknown_sensor_readings: Counter
    deadletters: Counter
    late_readings: Counter
    alerts: Counter
    batch_size: Histogram
    stage_seconds: Histogram
    detector_seconds: Histogram
    budget_overruns: Counter
    sink_retries: Counter
    active_alarms: Gauge
    notifications: Counter
    outbox_events: Counter
    outbox_waiting: Gauge
    outbox_dead: Gauge
    alarm_latency: Histogram
    alarm_budget_overruns: Counter
    batch_latency: Histogram
    alarms_by_district: Counter
    alarms_by_department: Counter
    state_bytes: Gauge
    sensors_tracked: Gauge
    batch_window: Gauge
    fetch_limit: Gauge

    def set_outbox_depth(self, receiver: str, waiting: int, dead: int) -> None:
        self.outbox_waiting.labels(receiver).set(waiting)
        self.outbox_dead.labels(receiver).set(dead)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        # no `_created` series: a fifth of the exposition, used by no board or rule, and a
        # scrape's cost is paid by the worker (streams/app.py)
        disable_created_metrics()  # type: ignore[no-untyped-call]

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        return cls(
            registry=registry,
            messages=counter("cityops_messages", "Kafka messages consumed", ("kind",)),
            readings=counter("cityops_readings", "Valid readings processed", ("kind",)),
            unknown_sensor_readings=counter(
                "cityops_unknown_sensor_readings", "Readings from sensors not in the catalog (processed with kind defaults)", ("kind",)
            ),
            deadletters=counter("cityops_deadletters", "Inputs sent to the dead-letter topic", ("kind", "reason")),
            late_readings=counter(
                "cityops_late_readings", "Readings not newer than the sensor's last one: they do not move alarms", ("kind", "rule")
            ),
            alerts=counter("cityops_alerts", "Alarm events emitted", ("kind", "rule", "severity", "status")),
            batch_size=Histogram(
                "cityops_batch_messages", "Messages per micro-batch", ("kind",), registry=registry,
                buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            ),
            stage_seconds=Histogram(
                "cityops_stage_seconds", "Time per pipeline stage per batch", ("kind", "stage"),
                registry=registry, buckets=_STAGE_BUCKETS,
            ),
            detector_seconds=Histogram(
                "cityops_detector_seconds", "Time per detector per batch (score_and_update)", ("kind", "detector"),
                registry=registry, buckets=_STAGE_BUCKETS,
            ),
            budget_overruns=counter("cityops_budget_overruns", "Batches whose processing exceeded the kind's budget", ("kind",)),
            sink_retries=counter("cityops_sink_retries", "Failed deliveries that were retried (outage in progress)", ("kind", "sink")),
            active_alarms=Gauge("cityops_active_alarms", "Live alarms per kind", ("kind",), registry=registry),
            notifications=counter(
                "cityops_notifications",
                "Alarm events per receiver and outcome: sent, repeated; muted_silence/muted_inhibit (receiver=all)",
                ("receiver", "outcome"),
            ),
            outbox_waiting=Gauge("cityops_outbox_waiting", "Notifications waiting in a receiver's outbox (due, retrying or in flight)",
                                 ("receiver",), registry=registry),
            outbox_dead=Gauge("cityops_outbox_dead", "Dead letters of a receiver's outbox (`cityops outbox retry` re-sends them)",
                              ("receiver",), registry=registry),
            alarm_latency=Histogram(
                "cityops_alarm_latency_seconds",
                "Reading to alarm: from the Kafka timestamp of the oldest message of the alarm's batch to the alarm "
                "being durable on the alerts topic and in Redis (an upper bound per alarm), per alarm event",
                ("kind",), registry=registry, buckets=_LATENCY_BUCKETS,
            ),
            alarm_budget_overruns=counter(
                "cityops_alarm_budget_overruns",
                "Alarm events later than their kind's latency budget (cityops_alarm_latency_seconds over budget_ms)",
                ("kind", "rule"),
            ),
            batch_latency=Histogram(
                "cityops_batch_latency_seconds",
                "Oldest message of a batch (Kafka timestamp) to the batch's outputs being durable, per batch",
                ("kind",), registry=registry, buckets=_LATENCY_BUCKETS,
            ),
            alarms_by_district=counter(
                "cityops_alarm_events_by_district", "Alarm events per district (town/street)", ("kind", "district", "severity", "status"),
            ),
            alarms_by_department=counter(
                "cityops_alarm_events_by_department", "Alarm events per routed department", ("department", "severity", "status"),
            ),
            state_bytes=Gauge(
                "cityops_detector_state_bytes", "Per-sensor detector and route state held for a kind (checkpoint record x sensors)",
                ("kind",), registry=registry,
            ),
            sensors_tracked=Gauge(
                "cityops_sensors_tracked", "Sensors with state for a kind (catalog ones, plus unknown ones heard)",
                ("kind", "catalog"), registry=registry,
            ),
            batch_window=Gauge(
                "cityops_batch_window_seconds", "How long a batch of a busy topic collects records: the kind's "
                "budget/2 minus the p99 time of its recent batches (streams/consumer.py)", ("kind",), registry=registry,
            ),
            fetch_limit=Gauge(
                "cityops_fetch_limit_messages", "Most messages one batch of a kind takes, from its measured cost per "
                "message, so a batch holds the event loop for at most a quarter of the tightest budget", ("kind",),
                registry=registry,
            ),
            outbox_events=counter(
                "cityops_outbox_events", "HTTP deliveries per receiver: delivered, retried, dead, redis_errors", ("receiver", "event"),
            ),
        )
