"""sqla_notify: commit-time change notifications from SQLAlchemy sessions.

Attach a :class:`Notifier` to a session factory; every committed transaction's inserts,
updates and deletes reach its sink as :class:`Notification` records.
"""

from ._broker import Batch as Batch
from ._broker import Broker as Broker
from ._broker import Gap as Gap
from ._broker import Ready as Ready
from ._errors import NotAttachedError as NotAttachedError
from ._errors import SinkError as SinkError
from ._errors import SqlaNotifyError as SqlaNotifyError
from ._errors import WouldBlock as WouldBlock
from ._hub import Hub as Hub
from ._hub import HubStats as HubStats
from ._notification import Notification as Notification
from ._notification import encode as encode
from ._notifier import Notifier as Notifier
from ._notifier import NotifierStats as NotifierStats
from ._options import NotifyOptions as NotifyOptions
from ._sinks import CallbackSink as CallbackSink
from ._sinks import FanoutSink as FanoutSink
from ._sinks import Sink as Sink
from ._subscriber import Entry as Entry
from ._subscriber import Frame as Frame
from ._subscriber import Subscriber as Subscriber
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
    "Sink",
    "SinkCallable",
    "SinkError",
    "SqlaNotifyError",
    "Subscriber",
    "WouldBlock",
    "encode",
)
