"""sqla_notify: commit-time change notifications from SQLAlchemy sessions.

Attach a :class:`Notifier` to a session factory; every committed transaction's inserts,
updates and deletes reach its sink as :class:`Notification` records.

The package, in the order a change travels (private subpackages hold the stages; the
public names are re-exported here and from the modules named after a technology)::

    _capture/    1 capture    session events record each flush's rows; a rollback discards them
    _notify/     2 notifier   Notifier: one batch per committed transaction, and notify()
                 3 sinks      Sink, CallbackSink, FanoutSink: where batches go
    _hub/        4 hub        Hub (the default sink): cursors, ReplayWindow, a Subscriber
                              per client with its bounded queue and Selection (indexed by
                              what it receives); the wire protocol's frames
    fastapi.py   5 transports notify_router: WebSocket and SSE routes (internals in _web/),
    static/ (in a wheel)      and the browser client it serves (source: clients/js/)
    _brokers/    brokers      Broker, Batch, Gap, Ready: how hubs of several processes share
    redis.py, postgres.py     batches; the two brokers that ship
    types.py                  the shape of every hook; _json.py: the one JSON encoder
    typescript.py             TypeScript types of each collection's notifications
                              (python -m sqla_notify.typescript module:Base)
"""

from ._brokers.base import Batch as Batch
from ._brokers.base import Broker as Broker
from ._brokers.base import Gap as Gap
from ._brokers.base import Ready as Ready
from ._capture.options import NotifyOptions as NotifyOptions
from ._capture.options import filter_columns as filter_columns
from ._capture.origin import set_origin as set_origin
from ._errors import NotAttachedError as NotAttachedError
from ._errors import SinkError as SinkError
from ._errors import SqlaNotifyError as SqlaNotifyError
from ._errors import WouldBlock as WouldBlock
from ._hub.hub import Hub as Hub
from ._hub.hub import HubStats as HubStats
from ._hub.selection import Selection as Selection
from ._hub.subscriber import Entry as Entry
from ._hub.subscriber import Frame as Frame
from ._hub.subscriber import Subscriber as Subscriber
from ._notify.notification import Notification as Notification
from ._notify.notification import encode as encode
from ._notify.notifier import Notifier as Notifier
from ._notify.notifier import NotifierStats as NotifierStats
from ._notify.sinks import CallbackSink as CallbackSink
from ._notify.sinks import FanoutSink as FanoutSink
from ._notify.sinks import Sink as Sink
from .types import Authorize as Authorize
from .types import PayloadFunction as PayloadFunction
from .types import PayloadMode as PayloadMode
from .types import SinkCallable as SinkCallable

__version__ = "0.1.0"

__all__ = (
    "Authorize",
    "Batch",
    "Broker",
    "CallbackSink",
    "Entry",
    "FanoutSink",
    "Frame",
    "Gap",
    "Hub",
    "HubStats",
    "NotAttachedError",
    "Notification",
    "Notifier",
    "NotifierStats",
    "NotifyOptions",
    "PayloadFunction",
    "PayloadMode",
    "Ready",
    "Selection",
    "Sink",
    "SinkCallable",
    "SinkError",
    "SqlaNotifyError",
    "Subscriber",
    "WouldBlock",
    "encode",
    "filter_columns",
    "set_origin",
)
