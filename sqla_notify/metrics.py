"""Metrics for operators: Prometheus exposition and OpenTelemetry instruments, from one place.

.. code-block:: python

    from sqla_notify.metrics import metrics_router

    notify = notify_router(hub, collections={"forums"})
    app.include_router(notify, prefix="/notify")
    app.include_router(metrics_router(hub, router=notify, notifier=notifier))  # GET /metrics

Everything is read when Prometheus scrapes: the counters the hub, the router and the
notifier keep anyway (``stats()``), the queue of every connected client (a histogram,
computed then), and two histograms the hot path keeps as plain bucket counters on the event
loop (the commit→send latency and the broker lag), with no lock and no ``prometheus_client``
call per frame. ``docs/operations.md`` lists every metric.

Install the extra: ``pip install "sqla_notify[prometheus]"`` (``prometheus-client``). For
OpenTelemetry, :func:`observe_with_opentelemetry` registers observable instruments that read
the same counters (``pip install opentelemetry-api``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from . import _timing
from ._hub.hub import Hub
from ._notify.notifier import Notifier

if TYPE_CHECKING:
    from fastapi import APIRouter
    from prometheus_client.registry import CollectorRegistry

    from .fastapi import NotifyRouter

__all__ = ("BROKER_STATES", "NotifyCollector", "Reading", "metrics_router", "observe_with_opentelemetry", "readings")

#: the states a broker reports (:attr:`HubStats.broker`), one ``sqla_notify_broker_state`` sample each
BROKER_STATES = ("connecting", "connected", "disconnected", "stopped")
#: upper bounds of the ``sqla_notify_queue_depth`` buckets, in frames
QUEUE_DEPTH_BOUNDS = (0, 1, 5, 10, 50, 100, 250, 500, 1000, 5000)


class Reading(NamedTuple):
    """One value of a counter or gauge, as both exporters see it."""

    #: the metric's name, without the ``_total`` a counter gets in Prometheus
    name: str
    #: ``"counter"`` or ``"gauge"``
    kind: str
    #: what it counts
    help: str
    value: float
    #: label values, by label name
    labels: dict[str, str]


def readings(hub: Hub, router: NotifyRouter | None = None, notifier: Notifier | None = None) -> list[Reading]:
    """The counters and gauges of ``hub`` (and of ``router``, ``notifier``) now: what the
    collector and the OpenTelemetry callbacks report. On the event loop, or any thread."""
    s = hub.stats()
    out = [
        Reading("sqla_notify_connections", "gauge", "Clients connected to the hub now.", s.connections, {}),
        Reading("sqla_notify_notifications_published", "counter",
                "Notifications the hub received (each once, whatever the number of clients).", s.published, {}),
        Reading("sqla_notify_frames_sent", "counter",
                "Frames queued for clients: notifications, replays and control messages.", s.frames_sent, {}),
        Reading("sqla_notify_frames_dropped", "counter",
                "Frames discarded because a client's queue overflowed.", s.frames_dropped, {}),
        Reading("sqla_notify_slow_disconnects", "counter",
                "Clients closed with 1013 for not reading.", s.slow_disconnects, {}),
        Reading("sqla_notify_resyncs", "counter",
                "resync messages queued for clients, for any cause.", s.resyncs, {}),
        Reading("sqla_notify_replays", "counter",
                "Reconnections served from the replay window.", s.replays, {}),
        Reading("sqla_notify_dropped_not_running", "counter",
                "Batches published while the hub was not running.", s.dropped_not_running, {}),
        Reading("sqla_notify_authorize_errors", "counter",
                "Notifications withheld because authorize raised (whole process).", s.authorize_errors, {}),
        Reading("sqla_notify_build_errors", "counter",
                "Committed transactions whose notifications could not be built.", s.build_errors, {}),
    ]
    broker = hub.broker
    if broker is not None:
        out += [
            Reading("sqla_notify_broker_state", "gauge", "1 for the broker's current state, 0 for the others.",
                    1.0 if s.broker == state else 0.0, {"state": state})
            for state in BROKER_STATES
        ]
        out += [
            Reading("sqla_notify_broker_gaps", "counter",
                    "Times the broker lost notifications and every client was told to resync.", s.gaps, {}),
            Reading("sqla_notify_broker_errors", "counter", "Failed broker reads and writes.", broker.errors, {}),
            Reading("sqla_notify_broker_rejected", "counter",
                    "Payloads read from the broker and dropped as forged or copied (with a secret).", broker.rejected, {}),
            Reading("sqla_notify_broker_pending_batches", "gauge",
                    "Batches committed here that wait to be written to the broker.", broker.pending, {}),
        ]
    if router is not None:
        r = router.stats()
        out += [
            Reading("sqla_notify_router_connections", "gauge",
                    "Connections the router serves now (WebSocket and SSE).", r.connections, {}),
            Reading("sqla_notify_router_authenticating", "gauge",
                    "Connections inside authenticate now (they count against the limits).", r.authenticating, {}),
            *(
                Reading("sqla_notify_router_refused", "counter", "Connections refused, by reason.", value,
                        {"reason": reason})
                for reason, value in (
                    ("origin", r.refused_origin), ("limit", r.refused_limit),
                    ("authentication", r.refused_authentication), ("timeout", r.authentication_timeouts),
                    ("error", r.authenticate_errors),
                )
            ),
            Reading("sqla_notify_router_expired", "counter",
                    "Connections refused or ended because their credentials expired.", r.expired, {}),
        ]
    if notifier is not None:
        n = notifier.stats()
        out += [
            Reading("sqla_notify_notifier_batches", "counter",
                    "Committed transactions handed to the sink.", n.batches, {}),
            Reading("sqla_notify_notifier_notifications", "counter",
                    "Notifications handed to the sink.", n.notifications, {}),
            Reading("sqla_notify_notifier_sink_errors", "counter", "Sink calls that raised.", n.sink_errors, {}),
        ]
    return out


def _prometheus() -> Any:
    try:
        import prometheus_client  # noqa: PLC0415 - an optional dependency
        from prometheus_client import core  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(
            f'sqla_notify.metrics needs prometheus-client ({exc.name} is missing): '
            f'pip install "sqla_notify[prometheus]"'
        ) from exc
    return prometheus_client, core


class NotifyCollector:
    """A ``prometheus_client`` collector: reads the hub (and the router, the notifier) when
    scraped. Register it in a registry of your own, or in the default one:
    ``prometheus_client.REGISTRY.register(NotifyCollector(hub, router=notify))``.

    :param hub: the hub to report.
    :param router: what :func:`~sqla_notify.fastapi.notify_router` returned, for its
        connections and refusals.
    :param notifier: the :class:`~sqla_notify.Notifier`, for its batches and sink errors.
    :raises ImportError: without ``prometheus-client``.
    :raises TypeError: if ``hub`` is not a :class:`~sqla_notify.Hub`.
    """

    def __init__(self, hub: Hub, *, router: NotifyRouter | None = None, notifier: Notifier | None = None) -> None:
        if not isinstance(hub, Hub):
            raise TypeError(f"NotifyCollector() expected a Hub, got {type(hub).__name__}: {hub!r}")
        self._core = _prometheus()[1]
        _timing.observe()  # the transports start timing their sends
        self.hub = hub
        self.router = router
        self.notifier = notifier

    def describe(self) -> list[Any]:
        """Nothing: the registry then does not scrape the hub when the collector is registered."""
        return []

    def collect(self) -> Iterator[Any]:
        """The metrics now (``prometheus_client`` calls this at each scrape)."""
        core = self._core
        families: dict[str, Any] = {}
        for r in readings(self.hub, self.router, self.notifier):
            family = families.get(r.name)
            if family is None:
                kind = core.CounterMetricFamily if r.kind == "counter" else core.GaugeMetricFamily
                family = families[r.name] = kind(r.name, r.help, labels=sorted(r.labels))
            family.add_metric([r.labels[k] for k in sorted(r.labels)], r.value)
        yield from families.values()
        yield _histogram(
            core, "sqla_notify_queue_depth", "Frames waiting per connected client, at scrape time.",
            _depths(self.hub.queue_depths()),
        )
        yield _histogram(
            core, "sqla_notify_commit_to_send_seconds",
            "Seconds from a batch's commit to its frames being handed to a client's socket "
            "(one observation per writer wake-up per client, weighted by its frames; whole process).",
            _timing.DELIVERY.snapshot(),
        )
        if self.hub.broker is not None:
            yield _histogram(
                core, "sqla_notify_broker_lag_seconds",
                "Seconds from a batch reaching the broker to this process reading it (whole process).",
                _timing.BROKER_LAG.snapshot(),
            )


def _depths(depths: Iterable[int]) -> tuple[list[tuple[float, int]], int, float]:
    buckets = _timing.Buckets(QUEUE_DEPTH_BOUNDS)
    for depth in depths:
        buckets.observe(depth)
    return buckets.snapshot()


def _histogram(core: Any, name: str, help_text: str, snapshot: tuple[list[tuple[float, int]], int, float]) -> Any:
    from prometheus_client.utils import floatToGoString  # noqa: PLC0415 - as the client writes ``le``

    cumulative, _, total = snapshot
    buckets = [(floatToGoString(le), n) for le, n in cumulative]  # type: ignore[no-untyped-call]
    return core.HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=total)


def metrics_router(
    hub: Hub,
    *,
    router: NotifyRouter | None = None,
    notifier: Notifier | None = None,
    path: str = "/metrics",
    registry: CollectorRegistry | None = None,
) -> APIRouter:
    """A FastAPI router serving ``GET path`` in Prometheus' text format.

    :param hub: see :class:`NotifyCollector`.
    :param router: see :class:`NotifyCollector`.
    :param notifier: see :class:`NotifyCollector`.
    :param path: where to serve it.
    :param registry: a ``prometheus_client`` registry to add the collector to and serve
        (e.g. ``prometheus_client.REGISTRY``, for the process metrics and your own too).
        ``None``: a registry of its own, holding only this collector.
    :raises ImportError: without ``prometheus-client`` or FastAPI.
    """
    prometheus_client, _ = _prometheus()
    from fastapi import APIRouter, Response  # noqa: PLC0415 - the fastapi extra

    collector = NotifyCollector(hub, router=router, notifier=notifier)
    if registry is None:
        registry = prometheus_client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    metrics = APIRouter()
    chosen = registry

    @metrics.get(path, include_in_schema=False)
    async def scrape() -> Response:  # on the loop: the hub's state is read where it is written
        return Response(prometheus_client.generate_latest(chosen), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    return metrics


def observe_with_opentelemetry(
    hub: Hub, *, router: NotifyRouter | None = None, notifier: Notifier | None = None, meter: Any = None,
) -> None:
    """Register OpenTelemetry observable instruments that read the same counters as
    :class:`NotifyCollector` when the SDK collects: an ``ObservableCounter`` per counter and
    an ``ObservableGauge`` per gauge, with the same names (no ``_total``).

    The three histograms are not offered: the OpenTelemetry API has no observable
    histogram, and recording into a synchronous one would put a call per observation on the
    hot path, which is what the plain bucket counters avoid.

    :param meter: an OpenTelemetry ``Meter``; ``None``: ``metrics.get_meter("sqla_notify")``.
    :raises ImportError: without ``opentelemetry-api``.
    """
    try:
        from opentelemetry import metrics as otel  # noqa: PLC0415 - an optional dependency
    except ImportError as exc:
        raise ImportError(
            f'observe_with_opentelemetry() needs opentelemetry-api ({exc.name} is missing): '
            f'pip install "sqla_notify[opentelemetry]"'
        ) from exc
    if meter is None:
        meter = otel.get_meter("sqla_notify")
    kinds = {r.name: (r.kind, r.help) for r in readings(hub, router, notifier)}

    def callback_for(name: str) -> Any:
        def observe(options: Any) -> Iterator[Any]:
            for r in readings(hub, router, notifier):
                if r.name == name:
                    yield otel.Observation(r.value, r.labels)
        return observe

    for name, (kind, help_text) in kinds.items():
        create = meter.create_observable_counter if kind == "counter" else meter.create_observable_gauge
        create(name, callbacks=[callback_for(name)], description=help_text)
