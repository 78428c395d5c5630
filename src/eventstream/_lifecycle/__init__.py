"""An event stream's life: entering and closing (``_closing``, the :class:`Lifecycle` of an
:class:`~eventstream.EventStream`), SIGINT and SIGTERM (``_signals``), and the thread and event
loop it belongs to (``_loop``)."""

from ._closing import Lifecycle
from ._loop import LoopBinding, current_thread_id

__all__ = ["Lifecycle", "LoopBinding", "current_thread_id"]
