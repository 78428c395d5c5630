"""An event stream's life: entering and closing (``_base``, the base class of
:class:`~eventstream.EventStream`), SIGINT and SIGTERM (``_signals``), and the thread and event
loop it belongs to (``_loop``)."""

from ._base import StreamLifecycle
from ._loop import LoopBinding, current_thread_id

__all__ = ["LoopBinding", "StreamLifecycle", "current_thread_id"]
